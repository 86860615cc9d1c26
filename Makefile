# The two commands a newcomer needs: `make serve` and `make test`. Both install missing system
# packages first (scripts/bootstrap.sh), so they work on a fresh Debian 12 machine.
BUILD ?= build
JOBS ?= $(shell nproc)
HOST ?= 127.0.0.1
PORT ?= 8080
CMAKE_FLAGS ?=

.PHONY: all bootstrap build serve test test-pg test-asan test-tsan bench format lint tidy fuzz clean

all: build

bootstrap:
	@./scripts/bootstrap.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: bootstrap $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

serve: build
	./$(BUILD)/gantry serve --host $(HOST) --port $(PORT)

test: build
	./scripts/test_deps.sh
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# Only the integration tests' PostgreSQL variants (<test>_pg): every server they start keeps its
# state in one real PostgreSQL cluster (`make test` runs them too).
test-pg: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600 -L pg

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs it too). Without
# the `pg` label (the integration tests' _pg variants, which the Release suite runs), to keep CI
# within its time limit; the PostgreSQL adapters still run under the sanitizers through their
# contract suites and the roles, scale-out and drain tests.
test-asan: bootstrap
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRY_SANITIZE=ON -DGANTRY_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	./scripts/test_deps.sh
	cd build-asan && ctest --output-on-failure -j $(JOBS) --timeout 900 -LE '^(slow|pg)$$'

# The suite under ThreadSanitizer (engine, I/O, ledger, job runner, webhook and key-watcher
# threads share state). Slow: CI runs it when time allows.
test-tsan: bootstrap
	cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRY_TSAN=ON -DGANTRY_BUILD_BENCH=OFF
	cmake --build build-tsan -j $(JOBS)
	./scripts/test_deps.sh
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --output-on-failure -j $(JOBS) --timeout 1200 -LE '^(slow|pg)$$'

# libFuzzer targets (clang): every parser that takes untrusted bytes. FUZZ_SECONDS per target
# (default 60); CI runs a short smoke so a crash on the committed corpus fails the build.
FUZZ_SECONDS ?= 60
fuzz:
	@./scripts/bootstrap.sh --fuzz
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRY_FUZZ=ON -DGANTRY_BUILD_TESTS=OFF -DGANTRY_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

# Style and layering checks CI runs before the suite: clang-format, the include rules of
# STYLE.md, and time read only through Clock.
lint: bootstrap
	./scripts/check_format.sh
	./scripts/check_layering.sh
	./scripts/check_clock.sh

# clang-tidy with the curated .clang-tidy over src/ (needs a configured build/).
tidy: $(BUILD)/build.ninja
	find src -name '*.cpp' | xargs -P $(JOBS) -n 4 clang-tidy -p $(BUILD) --quiet

bench: build
	./bench/run.sh

format:
	find src tests bench -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
