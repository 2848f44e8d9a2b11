// The RPCs the fuzz tests aim at (tests/fuzz_rpc_test.ts): every method of
// auth.v1.AuthService and otp.v1.OtpService/GenerateOtp, each with its path, the
// service that serves it, and its request and response schemas (to build requests and
// to check that a success body decodes).
import type { DescMessage } from "@bufbuild/protobuf";
import {
  ConfirmPhoneChangeRequestSchema,
  ConfirmPhoneChangeResponseSchema,
  DeleteAccountRequestSchema,
  DeleteAccountResponseSchema,
  GetProfileRequestSchema,
  GetProfileResponseSchema,
  GetSessionRequestSchema,
  GetSessionResponseSchema,
  ListSessionsRequestSchema,
  ListSessionsResponseSchema,
  LoginWithPhoneNumberRequestSchema,
  LoginWithPhoneNumberResponseSchema,
  LogoutRequestSchema,
  LogoutResponseSchema,
  RefreshSessionRequestSchema,
  RefreshSessionResponseSchema,
  RequestPhoneChangeRequestSchema,
  RequestPhoneChangeResponseSchema,
  RevokeSessionRequestSchema,
  RevokeSessionResponseSchema,
  SignupWithPhoneNumberRequestSchema,
  SignupWithPhoneNumberResponseSchema,
  ValidatePhoneNumberLoginRequestSchema,
  ValidatePhoneNumberLoginResponseSchema,
  VerifyPhoneNumberRequestSchema,
  VerifyPhoneNumberResponseSchema,
} from "../../shared/gen/auth/v1/auth_pb.ts";
import {
  GenerateOtpRequestSchema,
  GenerateOtpResponseSchema,
} from "../../shared/gen/otp/v1/otp_pb.ts";
import type { Stack } from "../stack.ts";

export interface Target {
  name: string;
  service: "auth" | "otp";
  path: string;
  req: DescMessage;
  res: DescMessage;
}

/** The base URL of the service that serves `t` in `stack`. */
export const baseUrl = (stack: Stack, t: Target): string =>
  t.service === "auth" ? stack.authUrl : stack.otpUrl;

const auth = (method: string, req: DescMessage, res: DescMessage): Target => ({
  name: method,
  service: "auth",
  path: `/auth.v1.AuthService/${method}`,
  req,
  res,
});

export const SIGNUP = auth(
  "SignupWithPhoneNumber",
  SignupWithPhoneNumberRequestSchema,
  SignupWithPhoneNumberResponseSchema,
);
export const VERIFY = auth(
  "VerifyPhoneNumber",
  VerifyPhoneNumberRequestSchema,
  VerifyPhoneNumberResponseSchema,
);
export const LOGIN = auth(
  "LoginWithPhoneNumber",
  LoginWithPhoneNumberRequestSchema,
  LoginWithPhoneNumberResponseSchema,
);
export const VALIDATE = auth(
  "ValidatePhoneNumberLogin",
  ValidatePhoneNumberLoginRequestSchema,
  ValidatePhoneNumberLoginResponseSchema,
);
export const PROFILE = auth("GetProfile", GetProfileRequestSchema, GetProfileResponseSchema);
export const LOGOUT = auth("Logout", LogoutRequestSchema, LogoutResponseSchema);
export const REFRESH = auth(
  "RefreshSession",
  RefreshSessionRequestSchema,
  RefreshSessionResponseSchema,
);
export const GET_SESSION = auth("GetSession", GetSessionRequestSchema, GetSessionResponseSchema);
export const LIST_SESSIONS = auth(
  "ListSessions",
  ListSessionsRequestSchema,
  ListSessionsResponseSchema,
);
export const REVOKE_SESSION = auth(
  "RevokeSession",
  RevokeSessionRequestSchema,
  RevokeSessionResponseSchema,
);
export const REQUEST_PHONE_CHANGE = auth(
  "RequestPhoneChange",
  RequestPhoneChangeRequestSchema,
  RequestPhoneChangeResponseSchema,
);
export const CONFIRM_PHONE_CHANGE = auth(
  "ConfirmPhoneChange",
  ConfirmPhoneChangeRequestSchema,
  ConfirmPhoneChangeResponseSchema,
);
export const DELETE_ACCOUNT = auth(
  "DeleteAccount",
  DeleteAccountRequestSchema,
  DeleteAccountResponseSchema,
);
export const GENERATE: Target = {
  name: "GenerateOtp",
  service: "otp",
  path: "/otp.v1.OtpService/GenerateOtp",
  req: GenerateOtpRequestSchema,
  res: GenerateOtpResponseSchema,
};

export const ALL_TARGETS = [
  SIGNUP,
  VERIFY,
  LOGIN,
  VALIDATE,
  PROFILE,
  LOGOUT,
  REFRESH,
  GET_SESSION,
  LIST_SESSIONS,
  REVOKE_SESSION,
  REQUEST_PHONE_CHANGE,
  CONFIRM_PHONE_CHANGE,
  DELETE_ACCOUNT,
  GENERATE,
];
export const targetNamed = (name: string) => ALL_TARGETS.find((t) => t.name === name)!;
