#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the dashboard's headless browser test.
# Does nothing when both are already installed; needs root (CI and dev machines run as root).
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium chromium-driver
