# The two set-up commands of the README: `make run` and `make test`.
# Both install what they need: a venv with the package, and for tests the
# Debian tools the tests drive (sipp, Chromium).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint unit integration browser bench bench-deps system-deps clean image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

# sipp plays the SIP trunk, Chromium the person at the page; docker-compose
# validates compose.yaml (tests/deploy). baresip is a real phone, kamailio a
# registrar and proxy, dnsmasq a DNS server for SRV/NAPTR and stunnel puts TLS
# in front of sipp (Debian's sipp is built without it); coturn relays for a
# browser that may only use TURN.
SYSTEM_TOOLS := sipp:sip-tester chromium:chromium docker-compose:docker-compose \
	baresip:baresip kamailio:kamailio dnsmasq:dnsmasq-base stunnel4:stunnel4 \
	turnserver:coturn
system-deps:
	@PATH="$$PATH:/usr/sbin:/sbin"; missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$(find /usr/lib -path '*kamailio/modules/tls.so' 2>/dev/null)" ]; then \
	  missing="$$missing kamailio-tls-modules"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

run: $(VENV)/.installed
	$(BIN)/bridge up

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed-test system-deps lint
	$(BIN)/pytest

unit: $(VENV)/.installed-test
	$(BIN)/pytest tests/unit

integration: $(VENV)/.installed-test system-deps
	$(BIN)/pytest tests/integration

browser: $(VENV)/.installed-test system-deps
	$(BIN)/pytest tests/browser

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

# The systems the benchmark measures beside ours, in the same run: rtpengine
# (userspace) and the Janus SIP plugin; espeak-ng speaks for PESQ; gcc builds
# pesq and the loopback shim bench/janus.py preloads into Janus.
BENCH_TOOLS := rtpengine:rtpengine-daemon janus:janus espeak-ng:espeak-ng cc:gcc
bench-deps: system-deps
	@PATH="$$PATH:/usr/sbin:/sbin"; missing=""; for pair in $(BENCH_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

bench: bench-deps $(VENV)/.installed-bench
	$(BIN)/python -m bench.calls

# The one image of the three services (Dockerfile); compose.yaml and k8s/ use it.
image:
	docker build -t webrtc-sip-bridge:latest .
