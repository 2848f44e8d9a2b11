// What the otp-service unit tests share: the issuer settings (today's defaults, three
// provider calls per request, a budget of 10, no wait between retries) and in-memory
// doubles of the store and the limits.
import type { OutgoingMessage } from "../shared/bus.ts";
import type { Admission, AdmitOptions, Limits } from "../shared/limits/engine.ts";
import { REASONS } from "../shared/limits/rules.ts";
import type { Rule } from "../shared/limits/rules.ts";
import { SMS_NUMBER_TYPES } from "../shared/phone.ts";
import type { PhoneType } from "../shared/phone.ts";
import type { IssuerSettings } from "./issuer.ts";
import type {
  Charge,
  CodeRequest,
  Opened,
  OtpStore,
  RequestState,
  RequestStatus,
} from "./store.ts";

export function testIssuerSettings(
  allowedNumberTypes: readonly PhoneType[] = SMS_NUMBER_TYPES,
): IssuerSettings {
  return {
    codeLength: 6,
    ttlSeconds: 300,
    maxAttempts: 3,
    sending: {
      cooldownSeconds: 60,
      pairPerHour: 5,
      pairPerDay: 10,
      numberPerHour: 20,
      numberPerDay: 50,
      countryPerHour: 500,
      prefixPerHour: 50,
      hourSeconds: 3600,
      daySeconds: 86400,
    },
    budgetPerHour: 10,
    destinations: { allowedCountries: [], allowedNumberTypes: [...allowedNumberTypes] },
    retryBaseDelayMs: 1,
  };
}

/**
 * The store in memory, as PostgreSQL keeps it: a request opened once, attempts counted,
 * an admitted open charged to `limits` first.
 */
export class MemoryOtpStore implements OtpStore {
  readonly requests = new Map<string, RequestState>();
  /** What the attempts and finishes handed over to publish, in order. */
  readonly published: OutgoingMessage[] = [];
  /** Requests finished as sent, in order. */
  readonly issued: string[] = [];

  constructor(readonly limits: Limits = new BudgetOnlyLimits()) {}

  async admitAndOpen(r: CodeRequest, ttlSeconds: number, charge: Charge) {
    const a = await this.limits.admit(charge.rules, { eventId: charge.eventId });
    if (!a.admitted) return { refusal: a };
    return { ...(await this.open(r, ttlSeconds)), reservation: a.reservation };
  }

  open(r: CodeRequest, ttlSeconds: number): Promise<Opened> {
    const known = this.requests.get(r.requestId);
    if (known) return Promise.resolve({ created: false, state: known });
    const now = new Date();
    const state: RequestState = {
      status: "pending",
      attempts: 0,
      challenge: {
        challengeId: r.requestId,
        issuedAt: now,
        expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
      },
    };
    this.requests.set(r.requestId, state);
    return Promise.resolve({ created: true, state });
  }
  beginAttempt(id: string, maxAttempts: number, publish?: OutgoingMessage) {
    const s = this.requests.get(id)!;
    if (s.status !== "pending" || s.attempts >= maxAttempts) return Promise.resolve(false);
    s.attempts++;
    if (publish) this.published.push(publish);
    return Promise.resolve(true);
  }
  finish(
    id: string,
    status: Exclude<RequestStatus, "pending">,
    _detail?: unknown,
    publish?: OutgoingMessage,
  ) {
    this.requests.get(id)!.status = status;
    if (publish) this.published.push(publish);
    if (status === "sent") this.issued.push(id);
    return Promise.resolve();
  }
  audit = () => Promise.resolve();
  sweep = () => Promise.resolve();
}

/**
 * Admits everything except the SMS budget, which has `budget` places (all of them by
 * default); an event admitted before is admitted again without a place, as the engine
 * replays it; counts refunds. The limits themselves are tested against PostgreSQL.
 */
export class BudgetOnlyLimits implements Limits {
  refunds = 0;
  private readonly admitted = new Set<string>();
  constructor(private budget = Number.POSITIVE_INFINITY) {}
  admit(rules: readonly Rule[], options: AdmitOptions = {}): Promise<Admission> {
    const replay = options.eventId !== undefined && this.admitted.has(options.eventId);
    if (!replay && rules.some((r) => r.reason === "budget")) {
      if (this.budget <= 0) {
        return Promise.resolve({
          admitted: false,
          reason: "budget",
          message: REASONS.budget,
          retryAfterSeconds: 60,
        });
      }
      this.budget--;
    }
    if (options.eventId !== undefined) this.admitted.add(options.eventId);
    return Promise.resolve({ admitted: true, reservation: { rules, at: 1 } });
  }
  refund() {
    this.refunds++;
    return Promise.resolve();
  }
}
