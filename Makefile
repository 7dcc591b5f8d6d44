# Convenience front end over CMake. The real build is CMakeLists.txt; these
# targets are the README's quick start and what CI runs.
#
#   make run    build kvmuxd alone (release) and start it on 127.0.0.1:7878
#   make test   build and run every test (ctest)
#   make install    install into PREFIX (default /usr/local; DESTDIR honoured)
#   make asan   the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make tsan   the concurrent tests under ThreadSanitizer
#               (tests/replica/*.supp: only frames of the uninstrumented
#               libraft/libuv are suppressed; see the files for why)
#   make clang  build with clang (warnings are errors) and run the unit tests
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_FLAGS ?= --output-on-failure

PREFIX ?= /usr/local

.PHONY: all configure build run test install asan tsan clang clean

all: build

configure:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null

build: configure
	cmake --build build -j $(JOBS)

run: configure
	cmake --build build -j $(JOBS) --target kvmuxd
	./build/kvmuxd

install: build
	DESTDIR=$(DESTDIR) cmake --install build --prefix $(PREFIX)

test: build
	cd build && ctest $(CTEST_FLAGS) -j $(JOBS)

asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DKVMUX_SANITIZE=address >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/replica/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  KVMUX_TEST_SCALE=0.25 ctest $(CTEST_FLAGS) -j $(JOBS)

tsan:
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DKVMUX_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/replica/tsan.supp \
	  KVMUX_TEST_SCALE=0.1 ctest $(CTEST_FLAGS) -L concurrent

clang:
	cmake -S . -B build-clang -DCMAKE_C_COMPILER=clang >/dev/null
	cmake --build build-clang -j $(JOBS)
	cd build-clang && ctest $(CTEST_FLAGS) -L unit

clean:
	rm -rf build build-asan build-tsan build-clang
