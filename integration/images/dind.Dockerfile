# berth-test/dind:latest: a Docker-in-Docker image like docker:dind, from the
# local Debian test image (which has docker.io). Built by provision.sh.
FROM berth-test/debian:12
COPY dind-entrypoint.sh /usr/local/bin/dockerd-entrypoint.sh
RUN chmod 0755 /usr/local/bin/dockerd-entrypoint.sh
VOLUME /var/lib/docker
EXPOSE 2375 2376
ENTRYPOINT ["dockerd-entrypoint.sh"]
CMD []
