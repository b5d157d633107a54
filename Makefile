# Switchboard. `make run` starts the stack on ./data; `make test` runs the suite.
export GOTOOLCHAIN := auto
export CGO_ENABLED := 1
# mattn/go-sqlite3 compiles SQLite's FTS5 (full-text /search) in only with
# this build tag. Exported, so that binaries the tests build get it too.
export GOFLAGS := $(strip $(GOFLAGS) -tags=sqlite_fts5)

GO      ?= go
BIN     := bin/switchboard
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/switchboard-im/switchboard/internal/buildinfo.Version=$(VERSION) \
           -X github.com/switchboard-im/switchboard/internal/buildinfo.Commit=$(COMMIT)
DATA    ?= ./data
# go test timeout per package; the whole suite must stay under 15 minutes.
TEST_TIMEOUT ?= 10m

.PHONY: all build run test test-deps test-interop bench bench-homeserver lint clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/switchboard

run: build
	./$(BIN) run --data $(DATA)

# Peers the tests start themselves (PostgreSQL). Installed when missing and
# running as root; otherwise the tests say what is missing.
test-deps:
	@./scripts/install-test-deps.sh

test: test-deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Opt-in, not part of `make test`: the example bots, built as binaries, against
# Dendrite (go install'ed from the module proxy into .cache/interop/ on the
# first run, which takes minutes). INTEROP_LOGS=1 prints the peers' logs.
test-interop:
	$(GO) test -tags interop,sqlite_fts5 -count=1 -v -timeout 20m ./tests/interop/

bench: build
	$(GO) run ./cmd/switchboard-bench --binary $(BIN)
	$(MAKE) bench-homeserver

# The homeserver's Element-facing parts, as Go benchmarks (both databases
# where they take a DB): /keys/query for 1,000 users, search p50/p99 over
# 100,000 messages, push-rule evaluation for a 1,000-member room, thumbnail
# and upload throughput with thumbnail p50/p99.
bench-homeserver:
	$(GO) test -run '^$$' -bench 'KeysQuery1000Users' -benchtime 3x ./homeserver/clientapi/
	$(GO) test -run '^$$' -bench 'Search100k' -benchtime 1x ./homeserver/clientapi/
	$(GO) test -run '^$$' -bench 'PushEvaluation1000Members|PushWorker1000Members' ./homeserver/push/
	$(GO) test -run '^$$' -bench 'Thumbnail|Upload' -benchtime 30x ./homeserver/media/

lint:
	@out=$$($$($(GO) env GOROOT)/bin/gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
