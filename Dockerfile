# Image for compose.yaml: builds the UI, installs pgcast, serves on DATABASE_URL.
FROM node:20-bookworm-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
# A regular install, not an editable one: the package lands in site-packages and the
# sources are dropped. The SQL and the UI go to <prefix>/share/pgcast, where
# server/resources.py looks for them outside a checkout.
# /var/lib/pgcast is the data directory (PGCAST_DATA_DIR): generated Pusher credentials and
# session key. compose.yaml mounts one volume there for every replica; a new volume takes
# this directory's owner, so pgcast may write it.
RUN pip install --no-cache-dir . && rm -rf /src && useradd --system pgcast \
    && install -d -o pgcast -g pgcast -m 0700 /var/lib/pgcast
COPY db/ /usr/local/share/pgcast/db/
COPY --from=ui /src/ui/dist /usr/local/share/pgcast/ui/dist/
WORKDIR /app
ENV PGCAST_DATA_DIR=/var/lib/pgcast
USER pgcast
EXPOSE 8080
CMD ["pgcast", "serve"]
