# Thin front door over CMake/CTest. The two commands a newcomer needs:
#   make demo    install missing packages, build, run the demonstration
#   make check   install missing packages, build, run every test (plain, then ASan+UBSan),
#                then the fuzz smoke run when clang is present
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 10

.PHONY: all deps build demo check test asan fuzz fuzz-smoke bench clean

all: build

deps:
	@sh scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/keyhole demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKH_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKH_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz-smoke:
	@if command -v clang >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory fuzz && sh fuzz/smoke.sh $(FUZZ_BUILD) $(FUZZ_SECONDS); \
	else echo "fuzz-smoke: clang not found, skipped"; fi

check: test asan fuzz-smoke
	@test -c /dev/null || { echo "FAIL: make check: /dev/null is no longer a character device" >&2; exit 1; }

bench: build
	sh bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
