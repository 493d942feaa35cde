# berth-test/http-service:latest: a tiny HTTP service for services: tests.
# GET / on port 8080 returns exactly "hello from berth service" (no newline).
FROM berth-test/busybox:latest
RUN mkdir -p /www && printf '%s' 'hello from berth service' >/www/index.html
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
