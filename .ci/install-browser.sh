#!/usr/bin/env bash
# Browser for the end-to-end UI test (tests/test_ui_browser.py): Debian's Chromium, CJK fonts for
# readable screenshots, and the `playwright` Python package, which drives that Chromium
# (playwright's own browser download needs the internet, so it is never used).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
python -c "import playwright" 2>/dev/null || python -m pip install -q "playwright>=1.50,<2"
echo "browser: $(chromium --version 2>/dev/null | head -1)"
