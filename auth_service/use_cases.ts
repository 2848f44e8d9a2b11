// Every auth-service use case, built from the ports. The production app, the dev
// launcher and the in-memory domain tests all assemble the domain here.
import type { HmacKey } from "../shared/crypto.ts";
import type { Limits } from "../shared/limits/engine.ts";
import type { Logger } from "../shared/log.ts";
import { NO_TELEMETRY } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import { Account } from "./account.ts";
import { ChallengeConsumer } from "./challenge_consumer.ts";
import { CodeRequests } from "./code_request.ts";
import type { AuthSettings, AuthStore, OtpGateway, TokenIssuer } from "./ports.ts";
import { Redemption } from "./redemption.ts";
import { Sessions } from "./sessions.ts";

export interface AuthUseCases {
  codes: CodeRequests;
  redemption: Redemption;
  sessions: Sessions;
  account: Account;
  challenges: ChallengeConsumer;
}

export interface AuthPorts {
  store: AuthStore;
  limits: Limits;
  otp: OtpGateway;
  hmac: HmacKey;
  tokens: TokenIssuer;
  log: Logger;
  /** Metrics of what happened; none by default. */
  telemetry?: Telemetry;
}

export function createUseCases(p: AuthPorts, settings: AuthSettings): AuthUseCases {
  const t = p.telemetry ?? NO_TELEMETRY;
  const redemption = new Redemption(p.store, p.hmac, settings, p.tokens, p.log, t);
  const sessions = new Sessions(p.store, settings, p.tokens, t);
  return {
    codes: new CodeRequests(p.store, p.limits, p.otp, settings, p.log, t),
    redemption,
    sessions,
    account: new Account(p.store, p.limits, p.otp, sessions, redemption, settings, p.log, t),
    challenges: new ChallengeConsumer(p.store, settings.maxTtlSeconds, p.log),
  };
}
