# pyxis-rs: build and install like NVIDIA pyxis does.
#   make                      build target/release/libspank_pyxis.so and pyxis-doctor
#   make install              <libdir>/slurm/spank_pyxis.so, <datadir>/pyxis/pyxis.conf, <bindir>/pyxis-doctor
#   make install prefix=/usr libdir=/usr/lib/x86_64-linux-gnu DESTDIR=/tmp/stage
# PREFIX is accepted as an alias of prefix.
PREFIX     ?= /usr/local
prefix     ?= $(PREFIX)
exec_prefix ?= $(prefix)
libdir     ?= $(exec_prefix)/lib
bindir     ?= $(exec_prefix)/bin
datarootdir ?= $(prefix)/share
datadir    ?= $(datarootdir)
DESTDIR    ?=
CARGO      ?= cargo
CARGO_TARGET_DIR ?= target

SO := $(CARGO_TARGET_DIR)/release/libspank_pyxis.so
DOCTOR := $(CARGO_TARGET_DIR)/release/pyxis-doctor

.PHONY: all build install uninstall check-symbols clean

all: build

build:
	$(CARGO) build --release --locked -p pyxis-rs -p pyxis-doctor

$(SO): build

install: build
	install -d -m 0755 $(DESTDIR)$(libdir)/slurm $(DESTDIR)$(datadir)/pyxis $(DESTDIR)$(bindir)
	install -m 0644 $(SO) $(DESTDIR)$(libdir)/slurm/spank_pyxis.so
	install -m 0755 $(DOCTOR) $(DESTDIR)$(bindir)/pyxis-doctor
	printf 'required %s/slurm/spank_pyxis.so\n' '$(libdir)' > $(DESTDIR)$(datadir)/pyxis/pyxis.conf
	chmod 0644 $(DESTDIR)$(datadir)/pyxis/pyxis.conf

uninstall:
	rm -f $(DESTDIR)$(libdir)/slurm/spank_pyxis.so $(DESTDIR)$(datadir)/pyxis/pyxis.conf $(DESTDIR)$(bindir)/pyxis-doctor

# The exported dynamic symbols must be exactly pyxis's (reference §2.1).
check-symbols: build
	tools/check-symbols.sh $(SO)

clean:
	$(CARGO) clean
