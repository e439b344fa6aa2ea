# wizgy: the workshop stack and the test suite.  `make help` lists the targets.
#
# Variables (environment, command line, or .env for the compose ones):
#   APP=flask|pyramid|django    the app `up` and `app-*` start     (default flask)
#   SERVERS=N WORKERS=N         for `scale`
#   USERS, SPAWN_RATE, DURATION for `load`
#   LOCUST_WORKERS, STRESS_USERS, STRESS_WORKERS, DURATION for `stress`; MASTER for `worker`
#   RUNTIME=cpython|pypy        the server image's interpreter (default cpython):
#                               `make up RUNTIME=pypy`, `RUNTIME=pypy make test-stack`
SHELL := /bin/bash
.DEFAULT_GOAL := help

COMPOSE ?= docker compose
PYTHON ?= python3
VENV := .venv
ARTIFACTS ?= test-artifacts
LESSONS := keep-duplicate-fds no-reap reap-once part1 part2
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

# One line on what the server container runs, from its status listener.
define DESCRIBE_SERVER
import json, urllib.request
s = json.load(urllib.request.urlopen("http://127.0.0.1:9000/status", timeout=5))
runs = f"{s['workers']} workers x {s['threads']} threads" if s["workers"] is not None \
    else f"{s['threads']} threads" if s["threads"] > 1 else "one process"
print(f"model {s['model']} ({runs}), app {s['app']}" + (f", lesson {s['lesson']}" if s["lesson"] else ""))
endef
export DESCRIBE_SERVER

.PHONY: help up down logs ps test venv base build ca-bundle load clients scale bench smuggle soak clean normal admin-password doctor stress worker \
	$(addprefix app-,$(APPS)) $(addprefix lesson-,$(LESSONS))

help: ## list the targets
	@grep -hE '^[a-z][a-z0-9 -]*:.*## ' $(MAKEFILE_LIST) | \
		awk -F':.*## ' '{ n = split($$1, names, " "); \
			for (i = 1; i <= n; i++) printf "  %-26s %s\n", names[i], $$2 }'
	@for lesson in $(LESSONS); do printf "  %-26s %s\n" lesson-$$lesson \
		"switch the server to that lesson and its limits, say what to watch"; done

# --- the stack -------------------------------------------------------------------

doctor: ## can this machine run the stack? Docker, Compose, buildx, ports, disk, ulimits: each missing thing with its fix
	@COMPOSE="$(COMPOSE)" server/docker/doctor

up: build ## build what is missing, start nginx, wizgy (APP=flask|pyramid|django) and Locust, print the URLs
	@# A server already running with other settings (APP=django make up) is switched
	@# without dropping a request, and Locust (which never sees APP) keeps running.
	@$(SWITCH_IF_CHANGED)
	$(COMPOSE) up -d --wait
	@$(MAKE) --no-print-directory urls

.PHONY: urls
urls:
	@echo
	@echo "  app (through nginx)   http://127.0.0.1:$(NGINX_PORT)/"
	@echo "  live view             http://127.0.0.1:$(NGINX_PORT)/wizgy/"
	@echo "  server status         http://127.0.0.1:$(NGINX_PORT)/wizgy/status   (RUNTIME=$(RUNTIME))"
	@echo "  Locust                http://127.0.0.1:$(LOCUST_PORT)/"
	@echo "  server                $$($(COMPOSE) exec -T server python3 -c "$$DESCRIBE_SERVER" 2>/dev/null || echo '(not running)')"
	@echo

down: ## stop and remove the stack's containers and network
	$(COMPOSE) down --remove-orphans

logs: ## follow the logs of every service
	$(COMPOSE) logs -f --tail=100

ps: ## the stack's containers, their health and ports
	$(COMPOSE) ps

# Every switch of the running server (an app, a lesson, back to normal) goes through
# server/docker/switch-server: the new container must be healthy before nginx moves to
# it, and the old one finishes its requests before it stops. No request fails.
SWITCH = COMPOSE="$(COMPOSE)" server/docker/switch-server
# The same, only when the running server was started with other settings than this
# environment gives docker-compose.yml (nothing running: nothing to do).
SWITCH_IF_CHANGED = running=$$($(COMPOSE) ps -q server 2>/dev/null | head -n1); \
	if [ -n "$$running" ] && [ "$$($(COMPOSE) config --hash server | cut -d' ' -f2)" != \
		"$$(docker inspect -f '{{index .Config.Labels "com.docker.compose.config-hash"}}' $$running)" ]; \
	then $(SWITCH); fi

app-flask app-pyramid app-django: app-%: ## switch the server to that app (flask, pyramid, django), dropping no request
	APP=$* $(SWITCH)
	@echo "server now runs APP=$*: http://127.0.0.1:$(NGINX_PORT)/hello"

# Each lesson: the fork model (unless LESSON_ENV says another) with one bug, and the
# limits that make the bug bite. A lesson added to LESSONS gets its lesson-NAME
# target, and its notes from a [NAME] section of server/docker/lesson-notes.
lesson-keep-duplicate-fds: LESSON_ENV := SERVER_NOFILE=256
lesson-no-reap: LESSON_ENV := SERVER_NPROC=64 SERVER_PIDS_LIMIT=128
lesson-reap-once: LESSON_ENV :=
# Parts 1 and 2: the labs' small servers (server/labs/) instead of wizgy, same port.
lesson-part1: LESSON_SERVER := server/labs/part1/webserver1.py, not wizgy
lesson-part2: LESSON_SERVER := server/labs/part2/webserver2.py, not wizgy

$(addprefix lesson-,$(LESSONS)): lesson-%:
	$(KEEP_APP) WIZGY_MODEL=fork $(LESSON_ENV) WIZGY_LESSON=$* $(SWITCH)
	@echo "lesson $*: $(or $(LESSON_SERVER),model fork), $(or $(LESSON_ENV),default limits)"
	@awk -v want='[$*]' '/^\[/ { on = ($$0 == want); next } on' server/docker/lesson-notes | \
		sed 's/NGINX_PORT/$(NGINX_PORT)/g'
	@echo "back to normal: make normal"

# The stack's defaults: APP (flask unless given), model, workers, threads and limits
# from docker-compose.yml and .env, whatever a lesson or `make scale` changed (the
# number of replicas stays).
NORMAL_UNSET := WIZGY_MODEL WIZGY_LESSON WIZGY_WORKERS WIZGY_THREADS WIZGY_KEEP_ALIVE \
	WIZGY_MAX_CHILDREN SERVER_NOFILE SERVER_NPROC SERVER_PIDS_LIMIT

normal: ## back to the stack's defaults (app, model, limits) after a lesson, dropping no request
	env $(addprefix -u ,$(NORMAL_UNSET)) APP=$${APP:-flask} $(SWITCH)
	@echo "server back to normal: APP=$${APP:-flask}, $$($(COMPOSE) exec -T server python3 -c "$$DESCRIBE_SERVER")"

admin-password: ## the Django admin's password (user admin; the server must run APP=django): http://127.0.0.1:8080/admin/
	@$(COMPOSE) exec -T server cat /tmp/wizgy-admin-password 2>/dev/null || \
		{ echo "no Django admin here: the server runs APP=$(RUNNING_APP); make app-django first" >&2; exit 1; }

clients: ## the lesson client (loadtest/lesson_client.py) straight at the server: make clients CLIENTS="--max-clients 128"; exit 0 when what happened is what the running lesson predicts
	$(COMPOSE) run --rm --no-deps --entrypoint python3 locust /opt/loadtest/lesson_client.py \
		--host server --port 8000 --status http://server:9000/status $(CLIENTS)

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

# --- load that bites, and Locust beyond this machine --------------------------------

LOCUST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
STRESS_USERS ?= 48
# The server's workers for the run. Locust and nginx share this machine's cores with
# the server and cost it more CPU per request than wizgy does, so one worker is what
# a 2-core machine leaves the server (two would each get half of that).
STRESS_WORKERS ?= 1

stress: ## HammerUser (no wait) through nginx for DURATION with LOCUST_WORKERS Locust processes (one per core), the server switched to STRESS_WORKERS workers (1; make normal puts back 2), then the server workers' CPU over the run; report in test-artifacts/stress
	@mkdir -p $(ARTIFACTS)/stress && chmod 0777 $(ARTIFACTS)/stress
	@export $(KEEP_APP) WIZGY_WORKERS=$(STRESS_WORKERS); $(SWITCH_IF_CHANGED)
	@echo "server: $$($(COMPOSE) exec -T server python3 -c "$$DESCRIBE_SERVER") (back to the stack's defaults: make normal)"
	$(COMPOSE) run --rm --no-deps -v "$(CURDIR)/$(ARTIFACTS)/stress:/out" locust \
		--headless --processes $(LOCUST_WORKERS) --users $(STRESS_USERS) --spawn-rate $(STRESS_USERS) \
		--run-time $(DURATION) --host http://nginx:8080 --csv /out/stress --html /out/stress.html \
		--only-summary HammerUser
	@echo "report: $(ARTIFACTS)/stress/stress.html"

# Workers elsewhere: on the stack's machine `LOCUST_MASTER_BIND=0.0.0.0 make up` publishes
# the master's port (5557; LOCUST_MASTER_PORT) beyond 127.0.0.1, and NGINX_BIND=0.0.0.0
# nginx's; on any machine with the repository, `make worker MASTER=that-host`.
ifneq ($(LOCUST_MASTER_BIND),)
LOCUST_MASTER_PORT ?= 5557
export LOCUST_MASTER_BIND LOCUST_MASTER_PORT
endif
MASTER ?= 127.0.0.1
MASTER_PORT ?= $(LOCUST_MASTER_PORT)
TARGET ?= http://$(MASTER):$(NGINX_PORT)
WORKER_WITH ?= docker
WORKER_NAME ?= wizgy-locust-worker-$(shell hostname)-$(shell echo $$PPID)

worker: ## a Locust worker here, joining the stack's master at MASTER (host or IP; default this machine's stack) and loading TARGET (default http://MASTER:NGINX_PORT); WORKER_WITH=venv runs it from .venv
	@port="$(MASTER_PORT)"; \
	if [ -z "$$port" ] && [ "$(MASTER)" = 127.0.0.1 ]; then \
		port=$$($(COMPOSE) port locust 5557 2>/dev/null | sed -n 's/.*://p'); fi; \
	port=$${port:-5557}; \
	echo "Locust worker: master $(MASTER):$$port, load sent to $(TARGET)"; \
	if [ "$(WORKER_WITH)" = venv ]; then \
		$(MAKE) --no-print-directory venv >/dev/null && \
		exec env WIZGY_TARGET=$(TARGET) $(VENV)/bin/locust -f loadtest/locustfile.py \
			--worker --master-host $(MASTER) --master-port $$port; \
	else \
		docker image inspect wizgy-locust:$(or $(IMAGE_TAG),latest) >/dev/null 2>&1 || \
			$(COMPOSE) build locust; \
		exec docker run --rm --init --network host --name $(WORKER_NAME) --hostname $(WORKER_NAME) \
			-e WIZGY_TARGET=$(TARGET) wizgy-locust:$(or $(IMAGE_TAG),latest) \
			--worker --master-host $(MASTER) --master-port $$port; \
	fi

BENCH_ARGS ?=

bench: ## the bench harness (loadtest/bench): every server side by side; BENCH_ARGS="--quick" or "--servers wizgy,granian --scenarios hello,c1"
	$(PYTHON) loadtest/bench/run.py $(BENCH_ARGS)

SMUGGLE_ARGS ?=

smuggle: ## the smuggling lab: the invalid corpus sent to wizgy, gunicorn and waitress side by side; writes loadtest/smuggle/results.md; SMUGGLE_ARGS="--servers wizgy,gunicorn-gthread"
	$(PYTHON) loadtest/smuggle/run.py $(SMUGGLE_ARGS)

SOAK_DURATION ?= 600
SOAK_MODELS ?= all

SOAK_ARGS ?=

soak: venv ## 10 minutes of mixed Locust load on each model (SOAK_MODELS=evloop,fork SOAK_DURATION=60; reloads under load: SOAK_ARGS="--hup-every 5 --ttin-ttou-every 5"): RSS and descriptors flat, no zombies, no errors; JSON in test-artifacts/soak
	@mkdir -p $(ARTIFACTS)/soak
	$(VENV)/bin/python loadtest/soak.py --models $(SOAK_MODELS) --duration $(SOAK_DURATION) $(SOAK_ARGS) --json $(ARTIFACTS)/soak/soak.json

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

build: base ca-bundle ## build the server, nginx and Locust images (cached layers make it quick; buildx or not)
	@COMPOSE="$(COMPOSE)" server/docker/build-images

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

.PHONY: test-fast
test-fast: venv ## the loop while you work, under 2 minutes: the unit and functional tiers, not the slow tests (soak, bench, fuzz campaigns) nor the Docker stack; `make test` runs them all
	@$(VENV)/bin/python -m pytest -q -m "not slow and not stack" server/tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; \
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
