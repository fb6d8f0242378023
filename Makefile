# One entry point for people and CI. Everything runs inside .venv, created here from PyPI wheels only.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.i2p-setup-stamp
# The local CPU wheel; any other torch spec pulls several GB of CUDA packages.
TORCH := torch==2.13.0
ROS_WHEELS := ros-kilted-rclpy ros-kilted-sensor-msgs ros-kilted-diagnostic-msgs ros-kilted-rmw-fastrtps-cpp
EXTRAS := test,deploy,prior
# Keep DDS traffic on this machine and away from other ROS graphs.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test test-all demo bench lint clean help

help:
	@echo "make demo      set up, then simulate a drive, replay it as a rosbag through the node and report"
	@echo "make test      set up, then run the fast test suite (make test-all: include slow tests)"
	@echo "make bench     run the benchmarks (tables + JSON under benchmarks/results/)"
	@echo "make lint      ruff"
	@echo "make setup     create .venv and install everything (idempotent)"

setup: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet $(ROS_WHEELS) rosbags
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/python -c "import torch, rclpy, sensor_msgs.msg, rosbags, i2p_ros; print('setup ok: torch', torch.__version__)"
	touch $@

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check $(wildcard i2p_ros test benchmarks launch) setup.py

bench: setup
	@set -e; for b in benchmarks/*.py; do case $$b in */_*) continue;; esac; \
	  echo "== $$b"; $(BIN)/python $$b; done

demo: setup
	$(BIN)/python -m i2p_ros.demo --out demo_out

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
