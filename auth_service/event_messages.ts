// The events auth-service publishes, built from what a store transaction just did. Each
// gets a fresh message id (the event's id); the outbox keeps it across retries, so a
// consumer that deduplicates on message_id sees each action once.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { OutgoingMessage } from "../shared/bus.ts";
import { encodeEvent } from "../shared/events.ts";
import {
  DeletionOrigin,
  PhoneChangedSchema,
  RevocationReason,
  SessionCreatedSchema,
  SessionOrigin,
  SessionRevokedSchema,
  UserDeletedSchema,
  UserSignedUpSchema,
  UserVerifiedSchema,
} from "../shared/gen/auth/events/v1/events_pb.ts";
import { EVENT_ROUTING_KEYS as K } from "../shared/topology.ts";
import type { AuditContext, DeletionOriginName, RevocationReasonName } from "./ports.ts";

const REASONS: Record<RevocationReasonName, RevocationReason> = {
  logout: RevocationReason.LOGOUT,
  revoked_by_user: RevocationReason.REVOKED_BY_USER,
  token_reuse: RevocationReason.TOKEN_REUSE,
  admin: RevocationReason.ADMIN,
};

const ORIGINS: Record<DeletionOriginName, DeletionOrigin> = {
  user: DeletionOrigin.USER,
  admin: DeletionOrigin.ADMIN,
};

function stamp(who: AuditContext, at: Date) {
  return { occurredAt: timestampFromDate(at), requestId: who.requestId };
}

function withCorrelation(m: OutgoingMessage, who: AuditContext): OutgoingMessage {
  return who.requestId ? { ...m, correlationId: who.requestId } : m;
}

export function userSignedUp(userId: string, phone: string, who: AuditContext, at = new Date()) {
  return withCorrelation(
    encodeEvent(
      K.userSignedUp,
      crypto.randomUUID(),
      create(UserSignedUpSchema, { userId, phoneNumber: phone, ...stamp(who, at) }),
      { timestamp: at },
    ),
    who,
  );
}

export function userVerified(userId: string, phone: string, who: AuditContext, at = new Date()) {
  return withCorrelation(
    encodeEvent(
      K.userVerified,
      crypto.randomUUID(),
      create(UserVerifiedSchema, { userId, phoneNumber: phone, ...stamp(who, at) }),
      { timestamp: at },
    ),
    who,
  );
}

export function sessionCreated(
  s: { sessionId: string; userId: string; expiresAt: Date; origin: "verify" | "login" },
  who: AuditContext,
  at = new Date(),
) {
  return withCorrelation(
    encodeEvent(
      K.sessionCreated,
      crypto.randomUUID(),
      create(SessionCreatedSchema, {
        sessionId: s.sessionId,
        userId: s.userId,
        origin: s.origin === "verify" ? SessionOrigin.VERIFY : SessionOrigin.LOGIN,
        expiresAt: timestampFromDate(s.expiresAt),
        ...stamp(who, at),
      }),
      { timestamp: at },
    ),
    who,
  );
}

export function sessionRevoked(
  sessionIds: string[],
  userId: string,
  reason: RevocationReasonName,
  who: AuditContext,
  at = new Date(),
) {
  return withCorrelation(
    encodeEvent(
      K.sessionRevoked,
      crypto.randomUUID(),
      create(SessionRevokedSchema, {
        sessionIds,
        userId,
        reason: REASONS[reason],
        ...stamp(who, at),
      }),
      { timestamp: at },
    ),
    who,
  );
}

export function phoneChanged(
  userId: string,
  oldPhone: string,
  newPhone: string,
  who: AuditContext,
  at = new Date(),
) {
  return withCorrelation(
    encodeEvent(
      K.phoneChanged,
      crypto.randomUUID(),
      create(PhoneChangedSchema, {
        userId,
        oldPhoneNumber: oldPhone,
        newPhoneNumber: newPhone,
        ...stamp(who, at),
      }),
      { timestamp: at },
    ),
    who,
  );
}

export function userDeleted(
  userId: string,
  origin: DeletionOriginName,
  who: AuditContext,
  at = new Date(),
) {
  return withCorrelation(
    encodeEvent(
      K.userDeleted,
      crypto.randomUUID(),
      create(UserDeletedSchema, { userId, origin: ORIGINS[origin], ...stamp(who, at) }),
      { timestamp: at },
    ),
    who,
  );
}
