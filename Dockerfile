# FGMachine as a container that launches experiments as its sibling containers
# through the host's Docker socket. Needs only npm and a POSIX shell in the base.
#   docker build -t fgmachine .
#   docker build --build-arg NODE_IMAGE=<a local node image> -t fgmachine .   (offline)
ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE}
WORKDIR /app
ENV NODE_ENV=production \
    FGMACHINE_DATA_DIR=/data \
    FGMACHINE_PROJECTS=/data/projects.json
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
# specs.json, projects.json and (by default) results live here: mount it from the host
# or a named volume, so that experiment containers can share the results.
VOLUME /data
EXPOSE 5081
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["node", "dist/healthcheck.js"]
# A small young generation, and an old one collected at 1.5 times what is live, keep the
# resident size near 150 MB however much experiments produce (BENCHMARKS.md), as in `npm start`.
CMD ["node", "--max-semi-space-size=4", "--heap-growing-percent=50", "dist/server.js"]
