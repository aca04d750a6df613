# Helpers sourced before the test's guest script (busybox sh). Part of floatlock (MIT).

# result NAME CMD [ARG...]: run CMD, then print "RESULT NAME <exit status>".
result() {
    _flvm_name=$1
    shift
    "$@"
    _flvm_rc=$?
    echo "RESULT $_flvm_name $_flvm_rc"
    return $_flvm_rc
}

# nfsmount SERVER:/PATH DIR [OPTIONS]: NFSv3 mount with the kernel client and lockd.
nfsmount() {
    mkdir -p "$2"
    mount.nfs "$1" "$2" -o "vers=3,${3:-proto=tcp,noac,lookupcache=none}"
}

# mark TEXT: a line the host can wait for with ClientVM.wait_for_output().
mark() {
    echo "MARK $*"
}
