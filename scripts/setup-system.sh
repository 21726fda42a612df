#!/usr/bin/env bash
# System packages trainwell's tests and examples use. Installs them where apt-get is available as root;
# elsewhere says how to get the same files. Never fails the set-up: the tests that need a package skip
# (with the reason) when it is absent.
set -u

FASHION=/usr/share/datasets/fashion-mnist

want=()
[ -f "$FASHION/train-images-idx3-ubyte.gz" ] || want+=(dataset-fashion-mnist)
# headless Chromium: the report test opens a generated report.html in it
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || want+=(chromium)

if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${want[*]} with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}") >/dev/null 2>&1 \
        || echo "setup: apt-get could not install ${want[*]}; the tests that need them will be skipped" >&2
else
    cat >&2 <<MSG
setup: not installing ${want[*]} (needs apt-get as root).
  Fashion-MNIST: install Debian's 'dataset-fashion-mnist' package, or put the four official IDX files
  (train-images-idx3-ubyte.gz, ...) in \$TRAINWELL_DATA/fashion-mnist/ -- trainwell also downloads them itself.
  Chromium: install Debian's 'chromium' package (or any chromium on PATH); without it the test that opens
  a report in a browser is skipped.
MSG
fi
exit 0
