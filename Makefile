# ffrtmp — see README.md.
GO      ?= go
BIN     := bin/ffrtmp
# Where `make run` installs the binary so that `ffrtmp` works in any shell.
BINDIR  ?= $(shell d=$$($(GO) env GOBIN); [ -n "$$d" ] || d=$$($(GO) env GOPATH)/bin; echo $$d)
DEVARGS ?=

.PHONY: build run test bench lint clean swagger-ui

# The Swagger UI that the server embeds at /v1/docs: a pinned
# swagger-ui-dist from npm, checked against its integrity string.
SWAGGER_UI_VERSION   := 5.35.0
SWAGGER_UI_INTEGRITY := sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==

build:
	$(GO) build -o $(BIN) .

# Build, install into $(BINDIR), and start dev mode: one node with a local
# worker on an embedded bbolt store.
run: build
	@mkdir -p $(BINDIR)
	install -m 0755 $(BIN) $(BINDIR)/ffrtmp
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "note: $(BINDIR) is not on PATH; add it to use ffrtmp from other shells";; esac
	$(BINDIR)/ffrtmp dev $(DEVARGS)

# The full suite: vet, then every test with the race detector, including
# real-ffmpeg worker tests and end-to-end tests of the binary.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...

# Benchmarks; docs/BENCHMARKS.md says how to read them.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./fsm/... ./store/... ./server/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin

# Refresh server/swaggerui from the pinned swagger-ui-dist (needs npm).
swagger-ui:
	server/swaggerui/vendor.sh $(SWAGGER_UI_VERSION) $(SWAGGER_UI_INTEGRITY)

# Debian package: dist/ffrtmp_<version>_<arch>.deb with the static binary,
# the systemd units and example configuration (packaging/build-deb.sh).
# packaging/test-deb.sh installs, checks and purges it on this machine.
.PHONY: package
package:
	GO='$(GO)' packaging/build-deb.sh
