# syntax=docker/dockerfile:1
# One recipe for both services: build with --target auth-service or --target otp-service.
# Each image runs its deno.json task, so its permissions are the named set in deno.json.
FROM denoland/deno:2.9.6 AS base
WORKDIR /app
# The cache belongs to the unprivileged user the services run as.
USER deno
# Dependencies first: this layer is reused until deno.json or deno.lock change.
COPY deno.json deno.lock ./
# The workspace member named in deno.json (the dev page): without its deno.json the
# install warns that the workspace is incomplete.
COPY dev/web/page/deno.json dev/web/page/
RUN deno install --frozen
COPY shared/ shared/

FROM base AS auth-service
COPY auth_service/ auth_service/
RUN deno cache --frozen auth_service/main.ts
EXPOSE 8080
CMD ["deno", "task", "auth"]

FROM base AS otp-service
COPY otp_service/ otp_service/
RUN deno cache --frozen otp_service/main.ts
EXPOSE 8081
CMD ["deno", "task", "otp"]
