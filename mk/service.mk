# hived as a system service: its man pages and its install. Included by the Makefile.
#
#   make man       render man/*.rst into the man pages beside them (committed; see man/build.py)
#   make install   the systemd units, sysusers.d and tmpfiles.d files, the man pages (gzipped),
#                  the docs, and an example /etc/hived/hived.toml where none exists yet.
#                  hived itself is installed with pip; point the unit at it with BINDIR.
#
#   make install PREFIX=/usr DESTDIR=/tmp/root            # as a distribution package would
#   sudo make install PREFIX=/usr BINDIR=/opt/hived/bin   # hived in a venv under /opt/hived

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/hived
SYSCONFDIR ?= /etc
# The config a fresh install starts from: production paths and no tokens (examples/hived.toml
# is the `make run` demo, whose tokens have public secrets).
EXAMPLE_CONFIG ?= systemd/hived.toml
INSTALL ?= install
# docutils comes with the venv's test extra; run without the Makefile, any python3 that has it.
MAN_PYTHON ?= $(if $(BIN),$(BIN)/python,python3)

MAN_PAGES := man/hived.8 man/hived.toml.5 man/hivectl.1
SERVICE_CONFIG := $(DESTDIR)$(SYSCONFDIR)/hived/hived.toml

.PHONY: man install

man: $(STAMP)
	$(MAN_PYTHON) man/build.py

install:
	$(INSTALL) -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(SYSCONFDIR)/hived
	sed 's|^ExecStart=/usr/bin/hived |ExecStart=$(BINDIR)/hived |' systemd/hived.service \
		> $(DESTDIR)$(UNITDIR)/hived.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/hived.service
	$(INSTALL) -m 0644 systemd/hived.socket $(DESTDIR)$(UNITDIR)/hived.socket
	$(INSTALL) -m 0644 systemd/hived.sysusers $(DESTDIR)$(SYSUSERSDIR)/hived.conf
	$(INSTALL) -m 0644 systemd/hived.tmpfiles $(DESTDIR)$(TMPFILESDIR)/hived.conf
	for page in $(MAN_PAGES); do \
		dir=$(DESTDIR)$(MANDIR)/man$${page##*.}; \
		$(INSTALL) -d $$dir && gzip -9 -n -c $$page > $$dir/$${page##*/}.gz \
			&& chmod 0644 $$dir/$${page##*/}.gz || exit 1; \
	done
	$(INSTALL) -m 0644 docs/protocol.md $(DESTDIR)$(DOCDIR)/protocol.md
	$(INSTALL) -m 0644 $(EXAMPLE_CONFIG) $(DESTDIR)$(DOCDIR)/hived.toml
	$(INSTALL) -m 0644 systemd/examples/*.conf $(DESTDIR)$(DOCDIR)/examples/
	@if [ -e $(SERVICE_CONFIG) ]; then \
		echo "kept $(SERVICE_CONFIG); the new example is $(DESTDIR)$(DOCDIR)/hived.toml"; \
	else \
		echo "$(INSTALL) -m 0640 $(EXAMPLE_CONFIG) $(SERVICE_CONFIG)"; \
		$(INSTALL) -m 0640 $(EXAMPLE_CONFIG) $(SERVICE_CONFIG); \
	fi
	@echo "next: systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload;"
	@echo "      add a token (hived token new --role admin), then systemctl enable --now hived"
