# Image for compose.yaml: builds the UI, installs pgcast, serves on DATABASE_URL.
FROM node:20-bookworm-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY ui/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server/ server/
COPY db/ db/
RUN pip install --no-cache-dir -e . && useradd --system pgcast
COPY --from=ui /src/ui/dist ui/dist
USER pgcast
EXPOSE 8080
CMD ["pgcast", "serve"]
