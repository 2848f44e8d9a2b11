// An SmsSender that times and counts each provider call by outcome and runs it in an
// "sms.send" span. Neither the destination nor the text goes into the span or a label.
import type { ProviderOutcome, Telemetry } from "../../shared/telemetry.ts";
import { countryOf } from "../../shared/telemetry.ts";
import { SpanKind, withSpan } from "../../shared/tracing.ts";
import { SmsError } from "./sender.ts";
import type { SmsMessage, SmsReceipt, SmsSender } from "./sender.ts";

export function providerOutcome(err: unknown): ProviderOutcome {
  if (!(err instanceof SmsError)) return "failed";
  if (err.permanent) return "rejected";
  return /timed out/.test(err.message) ? "timeout" : "failed";
}

export function instrumentedSms(sender: SmsSender, telemetry: Telemetry): SmsSender {
  return {
    name: sender.name,
    send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt> {
      return withSpan("sms.send", {
        "sms.provider": sender.name,
        "phone.country": countryOf(message.to) ?? "unknown",
      }, async (span) => {
        const started = performance.now();
        const took = () => (performance.now() - started) / 1000;
        try {
          const receipt = await sender.send(message, signal);
          telemetry.providerResult(sender.name, "accepted", took());
          span.setAttributes({ "sms.outcome": "accepted" });
          return receipt;
        } catch (err) {
          const outcome = providerOutcome(err);
          telemetry.providerResult(sender.name, outcome, took());
          span.setAttributes({ "sms.outcome": outcome });
          throw err;
        }
      }, { kind: SpanKind.CLIENT });
    },
  };
}
