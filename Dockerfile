# sms-monitor container: `docker run -e TWILIO_ACCOUNT_SID=... -e TWILIO_AUTH_TOKEN=... \
#   -e TWILIO_PHONE_NUMBER=... -p 9839:9839 sms-monitor` (or `... sms-monitor demo
#   --web.listen-address 0.0.0.0:9839` to try it without an account). See the README's
#   Security section for what to expose: Twilio's webhooks can get a port of their own
#   (SMS_MONITOR_WEBHOOK_LISTEN_ADDRESS) so /metrics need not face the internet.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY sms_monitor ./sms_monitor
# sms_monitor/runbook.md links to it: the runbook the daemon serves at /runbook
COPY docs/runbook.md ./docs/runbook.md
# the dependency set the image was tested with, pinned (constraints.txt)
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home sms-monitor \
    && install -d -m 0700 -o 10001 /var/lib/sms-monitor
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV SMS_MONITOR_LISTEN_ADDRESS=0.0.0.0:9839 \
    SMS_MONITOR_STATE_DIR=/var/lib/sms-monitor
VOLUME /var/lib/sms-monitor
EXPOSE 9839
# /healthz over TLS too: with TLS on, pass the web config as SMS_MONITOR_WEB_CONFIG_FILE
# (not --web.config.file) so the probe reads it as well
HEALTHCHECK --interval=30s --timeout=5s CMD ["sms-monitor", "probe"]
ENTRYPOINT ["sms-monitor"]
CMD ["run"]
