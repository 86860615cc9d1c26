# The two commands a newcomer needs: `make serve` and `make test`. Both install missing system
# packages first (scripts/bootstrap.sh), so they work on a fresh Debian 12 machine.
BUILD ?= build
JOBS ?= $(shell nproc)
HOST ?= 127.0.0.1
PORT ?= 8080
CMAKE_FLAGS ?=

.PHONY: all bootstrap build serve test test-asan bench format clean

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

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs it too).
test-asan: bootstrap
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRY_SANITIZE=ON -DGANTRY_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	./scripts/test_deps.sh
	cd build-asan && ctest --output-on-failure -j $(JOBS) --timeout 900 -LE slow

bench: build
	./bench/run.sh

format:
	find src tests bench -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan
