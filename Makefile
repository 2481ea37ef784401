# Herald: the two commands a new user needs (see README.md).
#   make demo   installs what is missing, builds, runs the Bell-tomography demo on mocks
#   make test   installs what is missing, runs the whole test suite
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := libhdf5-dev libdeflate-dev libsqlite3-dev libusb-1.0-0-dev libudev-dev pkg-config python3 python3-venv umockdev libumockdev-dev gir1.2-umockdev-1.0 python3-gi
# The servers and clients the tests start: a headless browser for the monitor and reports,
# Prometheus scraping /metrics, tmux as the terminal of the progress-line test, PostgreSQL's
# server binaries for the run catalogue's tests (each starts a private server of its own).
TEST_DEB_PACKAGES := chromium prometheus tmux postgresql
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps test-deps demo test build bench fuzz protos

# Installs only what is missing: Debian -dev packages for the C libraries, and the
# Python packages the tests use as independent clients (h5py, numpy, scipy, phconvert) in .venv.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@$(PY) -c "import h5py, numpy, scipy, phconvert, tttrlib, pqreader, websocket" 2>/dev/null || $(PY) -m pip install -q -r Tests/python/requirements.txt

test-deps: deps
	@missing=""; for p in $(TEST_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build -c release --product herald

demo: build
	.build/release/herald run Experiments/bell-tomography.yaml --mock --seed 7 --out out/bell-tomography.h5 --overwrite

# The emulated-USB suite runs on its own after the rest: under umockdev libusb's waits spin
# (the emulated device node always polls ready), which would starve the wall-clock deadlines
# of the simulated-lab suites running beside it.
# The live-display suites (a headless browser, Prometheus, tmux, runs paced in real time)
# run last, on their own, so the browser's load does not stretch other suites' waits.
# The node suites also run on their own: they time leases and losses on the wall clock
# (within 1 s of a lease expiring), which a machine busy with every other suite would skew.
# The runs the tests start are not catalogued (the catalogue's own suite gives each of its tests
# a catalogue of its own), and nothing goes to the user's data directory.
test: export HERALD_DATA_DIR := $(abspath .build)/test-data
test: export HERALD_CATALOGUE := off
test: test-deps
	HERALD_PYTHON=$(abspath $(PY)) $(SWIFT) test --skip USBInstrumentTests --skip NodeTests --skip NodeNetworkTests --skip MonitorTests --skip TerminalDisplayTests --skip ReportTests
	HERALD_PYTHON=$(abspath $(PY)) $(SWIFT) test --filter USBInstrumentTests
	HERALD_PYTHON=$(abspath $(PY)) $(SWIFT) test --filter "NodeTests|NodeNetworkTests"
	HERALD_PYTHON=$(abspath $(PY)) $(SWIFT) test --filter "MonitorTests|TerminalDisplayTests|ReportTests"

# Benchmarks against the tools a user would otherwise pick, on the same inputs, as ratios.
# Peers are installed into .venv-bench by this target (see bench/requirements-peers.txt).
bench: test-deps
	$(SWIFT) build -c release --product herald-bench
	$(SWIFT) build -c release --product herald
	@[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
	@.venv-bench/bin/python -m pip install -q "Quantum-Tomography==1.2.0" h5py tttrlib || echo "peer install failed: reported as missing"
	@# SeQUeNCe needs numpy >= 2.3, which Quantum-Tomography cannot run under: a venv of its own.
	@[ -x .venv-bench-sequence/bin/python ] || python3 -m venv .venv-bench-sequence
	@.venv-bench-sequence/bin/python -c "import sequence" 2>/dev/null || .venv-bench-sequence/bin/python -m pip install -q "sequence==0.8.5" || echo "SeQUeNCe install failed: reported as missing"
	@# Its MLE fails under numpy 2; pip warns about the scipy pin, which the package works with.
	@.venv-bench/bin/python -m pip install -q "numpy<2" "scipy<1.14" 2>/dev/null || true
	$(PY) bench/run.py

# Every input parser under herald-fuzz for 100 000 mutated inputs each (make test runs a
# few thousand). Seeds: Tests/Fuzz/corpus, Experiments/, and the PicoQuant samples in
# ../shared/data (or $$HERALD_SHARED_DATA). A crash leaves its input in .fuzz/TARGET/current.*
FUZZ_RUNS ?= 100000
SHARED_DATA ?= $(or $(HERALD_SHARED_DATA),$(abspath ../shared/data))
fuzz: deps
	$(SWIFT) build --product herald-fuzz
	@mkdir -p .fuzz
	.build/debug/herald-fuzz tttr --iterations $(FUZZ_RUNS) --work .fuzz/tttr \
	  $(addprefix $(SHARED_DATA)/picoquant/,hydraharp/v20_t3.ptu hydraharp/v20.ht3 timeharp/v50.t3r hydraharp/v10_t3.ptu hydraharp/v20_t2.ptu picoharp/v30_t2.ptu)
	.build/debug/herald-fuzz script --iterations $(FUZZ_RUNS) --work .fuzz/script Experiments/*.yaml
	.build/debug/herald-fuzz csv --iterations $(FUZZ_RUNS) --work .fuzz/csv Tests/Fuzz/corpus/*.csv
	.build/debug/herald-fuzz runfile --iterations $(FUZZ_RUNS) --work .fuzz/runfile Tests/Fuzz/corpus/run-tomography-16.h5 Tests/Fuzz/corpus/run-heralds.h5
	.build/debug/herald-fuzz node --iterations $(FUZZ_RUNS) --work .fuzz/node Tests/Fuzz/corpus/node-*.bin

# Regenerates the node protocol's Swift from Protos/ (committed: the plugin build is too slow
# for CI). Needs protoc (Debian protobuf-compiler) and the two plugins, built once with
#   swift build -c release --product protoc-gen-swift        (in a checkout of apple/swift-protobuf)
#   swift build -c release --product protoc-gen-grpc-swift-2 (in a checkout of grpc/grpc-swift-protobuf)
# and put on PATH or named by PROTOC_GEN_SWIFT / PROTOC_GEN_GRPC_SWIFT.
PROTOC_GEN_SWIFT ?= $(shell command -v protoc-gen-swift)
PROTOC_GEN_GRPC_SWIFT ?= $(shell command -v protoc-gen-grpc-swift-2)
protos:
	protoc --proto_path=Protos \
	  --plugin=protoc-gen-swift=$(PROTOC_GEN_SWIFT) --swift_opt=Visibility=Public --swift_out=Sources/HeraldNodeProtocol/Generated \
	  --plugin=protoc-gen-grpc-swift-2=$(PROTOC_GEN_GRPC_SWIFT) --grpc-swift-2_opt=Visibility=Public \
	  --grpc-swift-2_out=Sources/HeraldNodeProtocol/Generated herald/node/v1/node.proto
