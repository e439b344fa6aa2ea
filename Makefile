# wizgy: the workshop stack and the test suite.  `make help` lists the targets.
#
# Variables (environment, command line, or .env for the compose ones):
#   APP=flask|pyramid|django    the app `up` and `app-*` start     (default flask)
#   SERVERS=N WORKERS=N         for `scale`
#   USERS, SPAWN_RATE, DURATION for `load`
#   RUNTIME=cpython|pypy        the server image's interpreter (default cpython):
#                               `make up RUNTIME=pypy`, `RUNTIME=pypy make test-stack`
SHELL := /bin/bash
.DEFAULT_GOAL := help

COMPOSE ?= docker compose
PYTHON ?= python3
VENV := .venv
ARTIFACTS ?= test-artifacts
LESSONS := keep-duplicate-fds no-reap reap-once
APPS := flask pyramid django

CLIENTS ?= --max-clients 128
SERVERS ?= 2
WORKERS ?= 2
USERS ?= 20
SPAWN_RATE ?= 5
DURATION ?= 60s
NGINX_PORT ?= 8080
LOCUST_PORT ?= 8089
export NGINX_PORT LOCUST_PORT
# `make up APP=django` works like `APP=django make up`: compose sees these (only when
# set, so that nothing empty reaches the tests' environment).
$(foreach name,APP IMAGE_TAG WIZGY_MODEL WIZGY_WORKERS WIZGY_THREADS WIZGY_LESSON,\
	$(if $($(name)),$(eval export $(name))))

# The server image's interpreter. Its image is wizgy-server:SERVER_TAG, IMAGE_TAG with
# -pypy appended on PyPy, so that both runtimes' images coexist (docker-compose.yml).
RUNTIME ?= cpython
ifeq ($(filter $(RUNTIME),cpython pypy),)
$(error RUNTIME=$(RUNTIME): expected cpython or pypy)
endif
SERVER_TAG := $(or $(IMAGE_TAG),latest)$(if $(filter pypy,$(RUNTIME)),-pypy)
export RUNTIME SERVER_TAG

# The app the running server was started with: lessons, scale and load keep it
# unless APP is given.
RUNNING_APP = $$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' \
	$$($(COMPOSE) ps -q server 2>/dev/null | head -n1) 2>/dev/null | sed -n 's/^APP=//p')
KEEP_APP = APP=$${APP:-$(RUNNING_APP)}

# Build through the engine's own BuildKit, without needing the buildx plugin.
export COMPOSE_BAKE := false

.PHONY: help up down logs ps test venv base build ca-bundle load clients scale bench smuggle soak clean \
	$(addprefix app-,$(APPS)) $(addprefix lesson-,$(LESSONS))

help: ## list the targets
	@grep -hE '^[a-z][a-z -]*:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ n = split($$1, names, " "); \
			for (i = 1; i <= n; i++) printf "  %-26s %s\n", names[i], $$2 }'

# --- the stack -------------------------------------------------------------------

up: build ## build what is missing, start nginx, wizgy (APP=flask|pyramid|django) and Locust, print the URLs
	$(COMPOSE) up -d --wait
	@$(MAKE) --no-print-directory urls

.PHONY: urls
urls:
	@echo
	@echo "  app (through nginx)   http://127.0.0.1:$(NGINX_PORT)/"
	@echo "  server status         http://127.0.0.1:$(NGINX_PORT)/wizgy/status   (RUNTIME=$(RUNTIME))"
	@echo "  Locust                http://127.0.0.1:$(LOCUST_PORT)/"
	@echo

down: ## stop and remove the stack's containers and network
	$(COMPOSE) down --remove-orphans

logs: ## follow the logs of every service
	$(COMPOSE) logs -f --tail=100

ps: ## the stack's containers, their health and ports
	$(COMPOSE) ps

app-flask app-pyramid app-django: app-%: ## restart the server on that app (flask, pyramid, django)
	APP=$* $(COMPOSE) up -d --no-deps --force-recreate --wait server
	@echo "server now runs APP=$*: http://127.0.0.1:$(NGINX_PORT)/hello"

# Each lesson: the fork model with one bug, and the limits that make the bug bite.
lesson-keep-duplicate-fds: LESSON_ENV := SERVER_NOFILE=256
lesson-no-reap: LESSON_ENV := SERVER_NPROC=64 SERVER_PIDS_LIMIT=128
lesson-reap-once: LESSON_ENV :=

lesson-keep-duplicate-fds lesson-no-reap lesson-reap-once: lesson-%: ## restart the server as fork with that lesson and its ulimits, say what to watch
	$(KEEP_APP) $(LESSON_ENV) WIZGY_MODEL=fork WIZGY_LESSON=$* $(COMPOSE) up -d --no-deps --force-recreate --wait server
	@echo "lesson $*: model fork, $(or $(LESSON_ENV),default limits)"
	@awk -v want='[$*]' '/^\[/ { on = ($$0 == want); next } on' server/docker/lesson-notes | \
		sed 's/NGINX_PORT/$(NGINX_PORT)/g'
	@echo "back to normal: make app-$$($(KEEP_APP); echo $${APP:-flask})"

clients: ## the lesson client (loadtest/lesson_client.py) straight at the server: make clients CLIENTS="--max-clients 128"
	$(COMPOSE) run --rm --no-deps --entrypoint python3 locust /opt/loadtest/lesson_client.py \
		--host server --port 8000 $(CLIENTS)

scale: ## run SERVERS=N server replicas with WORKERS=N workers each behind nginx
	$(KEEP_APP) WIZGY_WORKERS=$(WORKERS) $(COMPOSE) up -d --no-deps --scale server=$(SERVERS) --wait server
	@echo "$(SERVERS) servers x $(WORKERS) workers; nginx picks them up within seconds:"
	@echo "  curl -sI http://127.0.0.1:$(NGINX_PORT)/hello | grep X-Upstream-Addr"

load: ## Locust headless through nginx for DURATION: HTML report + CSV in test-artifacts/load, fails on errors
	@mkdir -p $(ARTIFACTS)/load && chmod 0777 $(ARTIFACTS)/load
	$(KEEP_APP) $(COMPOSE) run --rm --no-deps -v "$(CURDIR)/$(ARTIFACTS)/load:/out" locust \
		--headless --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(DURATION) \
		--host http://nginx:8080 --csv /out/load --html /out/load.html --only-summary
	@echo "report: $(ARTIFACTS)/load/load.html"

BENCH_ARGS ?=

bench: ## the bench harness (loadtest/bench): every server side by side; BENCH_ARGS="--quick" or "--servers wizgy,granian --scenarios hello,c1"
	$(PYTHON) loadtest/bench/run.py $(BENCH_ARGS)

SMUGGLE_ARGS ?=

smuggle: ## the smuggling lab: the invalid corpus sent to wizgy, gunicorn and waitress side by side; writes loadtest/smuggle/results.md; SMUGGLE_ARGS="--servers wizgy,gunicorn-gthread"
	$(PYTHON) loadtest/smuggle/run.py $(SMUGGLE_ARGS)

SOAK_DURATION ?= 600
SOAK_MODELS ?= all

soak: venv ## 10 minutes of mixed Locust load on each model (SOAK_MODELS=evloop,fork SOAK_DURATION=60): RSS and descriptors flat, no zombies, no errors; JSON in test-artifacts/soak
	@mkdir -p $(ARTIFACTS)/soak
	$(VENV)/bin/python loadtest/soak.py --models $(SOAK_MODELS) --duration $(SOAK_DURATION) --json $(ARTIFACTS)/soak/soak.json

clean: ## remove this project's containers, networks, volumes and images (not the Debian base)
	$(COMPOSE) down --rmi all --volumes --remove-orphans
	docker image prune -f --filter label=io.wizgy.project=wizgy
	@# and what an interrupted `make test` may have left (projects wizgy-test-PID)
	@docker ps -a --filter label=com.docker.compose.project --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | \
		awk '$$2 ~ /^wizgy-test-/ { print $$1 }' | xargs -r docker rm -f
	@docker network ls --filter label=com.docker.compose.project --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | \
		awk '$$2 ~ /^wizgy-test-/ { print $$1 }' | xargs -r docker network rm

# --- images ----------------------------------------------------------------------

base: ## make sure debian:trixie-slim exists: local, else pulled, else debootstrapped offline
	server/docker/base-image

# pip in the images must trust the host's CA (a TLS-intercepting proxy); an empty
# file when the host has none.
ca-bundle:
	@for dir in server/.build loadtest/.build; do \
		mkdir -p $$dir; \
		if [ -s /etc/ssl/certs/ca-certificates.crt ]; then \
			cp /etc/ssl/certs/ca-certificates.crt $$dir/ca-certificates.crt; \
		else : >$$dir/ca-certificates.crt; fi; \
	done

build: base ca-bundle ## build the server, nginx and Locust images (cached layers make it quick)
	$(COMPOSE) build

# --- tests -----------------------------------------------------------------------

venv: $(VENV)/.installed

$(VENV)/.installed: server/constraints.txt server/requirements-dev.txt server/pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check \
		-c server/constraints.txt -r server/requirements-dev.txt -e server
	touch $@

test: venv ## every test: unit, functional and the Docker stack (server/tests/stack)
	@$(VENV)/bin/python -m pytest server/tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# --- PyPy ----------------------------------------------------------------------------

PYPY ?= pypy3
VENV_PYPY := .venv-pypy
# The tests that run wizgy in-process (the parser's); the others start it as a server.
IN_PROCESS_TESTS := server/tests/test_http_parser.py server/tests/test_fuzz.py

.PHONY: venv-pypy test-pypy test-stack
venv-pypy: $(VENV_PYPY)/.installed

$(VENV_PYPY)/.installed: server/constraints-pypy.txt server/requirements-pypy.txt server/pyproject.toml
	@command -v $(PYPY) >/dev/null || { echo "needs $(PYPY): apt-get install pypy3 pypy3-venv" >&2; exit 1; }
	test -x $(VENV_PYPY)/bin/python || $(PYPY) -m venv $(VENV_PYPY)
	$(VENV_PYPY)/bin/pip install -q --disable-pip-version-check \
		-c server/constraints-pypy.txt -r server/requirements-pypy.txt -e server
	touch $@

test-pypy: venv venv-pypy ## the server tests (not the Docker stack) with wizgy on PyPy: clients on CPython, server on .venv-pypy; then the parser's in-process tests on PyPy
	WIZGY_TEST_PYTHON=$(CURDIR)/$(VENV_PYPY)/bin/python $(VENV)/bin/python -m pytest server/tests \
		--ignore=server/tests/stack $(addprefix --ignore=,$(IN_PROCESS_TESTS))
	$(VENV_PYPY)/bin/python -m pytest -p no:cacheprovider $(IN_PROCESS_TESTS)

test-stack: venv ## only the Docker stack tests (server/tests/stack), on the server image of RUNTIME: RUNTIME=pypy make test-stack
	$(VENV)/bin/python -m pytest server/tests/stack
