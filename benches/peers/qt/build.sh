#!/usr/bin/env bash
# Builds the Qt SCXML driver into build/driver (needs qt6-scxml-dev, g++, pkg-config).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p build
g++ -O2 -std=c++17 -fPIC driver.cpp -o build/driver $(pkg-config --cflags --libs Qt6Scxml Qt6Core)
