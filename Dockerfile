# sms-monitor container: `docker run -e TWILIO_ACCOUNT_SID=... -e TWILIO_AUTH_TOKEN=... \
#   -e TWILIO_PHONE_NUMBER=... -p 9839:9839 sms-monitor` (or `... sms-monitor demo
#   --web.listen-address 0.0.0.0:9839` to try it without an account).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sms_monitor ./sms_monitor
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home sms-monitor \
    && mkdir -p /var/lib/sms-monitor && chown 10001 /var/lib/sms-monitor
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
ENV SMS_MONITOR_LISTEN_ADDRESS=0.0.0.0:9839 \
    SMS_MONITOR_STATE_DIR=/var/lib/sms-monitor
VOLUME /var/lib/sms-monitor
EXPOSE 9839
HEALTHCHECK --interval=30s --timeout=5s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9839/healthz', timeout=3)"
ENTRYPOINT ["sms-monitor"]
CMD ["run"]
