#!/bin/sh
# Sample verify hook: the new API key arrives on stdin (never in argv or the environment).
# A real hook would call the partner's test endpoint with it. Exit 0 accepts the value.
read -r key
case "$key" in
  rtr_live_*) exit 0 ;;
  *) exit 1 ;;
esac
