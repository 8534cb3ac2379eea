# Sourced (not run) by the CI scripts that need a nightly-only sanitizer: asan.sh, tsan.sh.
# Gives them one way to say "skipped: why" and one check of the toolchain:
#
#   skip WHY                       prints "<script>: skipped: WHY" and exits 0
#                                  (1 with GDS_REQUIRE_NIGHTLY=1)
#   need_sanitizer NAME TITLE      skips unless the nightly toolchain is installed and rustc
#                                  supports -Zsanitizer=NAME on this host; then sets $host to
#                                  the host triple (the scripts pass it as an explicit --target)
#
# The scripts promise in their header that without nightly they skip and exit 0: keep it so.

skip() {
    echo "${0##*/}: skipped: $1"
    [ "${GDS_REQUIRE_NIGHTLY:-0}" = 1 ] && exit 1
    exit 0
}

need_sanitizer() {
    cargo +nightly --version >/dev/null 2>&1 ||
        skip "no nightly toolchain (-Zsanitizer=$1 is unstable); install it with: rustup toolchain install nightly"
    host=$(rustc +nightly -vV | sed -n 's/^host: //p')
    case "$host" in
        x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) ;;
        *) skip "$2 is not supported by rustc on $host" ;;
    esac
}
