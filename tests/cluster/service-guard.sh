# Sourced by tests/cluster/up and tests/cluster/down (not run on its own).
#
# The test cluster's Service range. There is no kube-proxy here, so nothing turns a connection
# to a Service's ClusterIP into one to a Pod: it would leave this machine through its default
# route. These iptables rules refuse such traffic on the spot instead, whether it comes from a
# process on this machine (OUTPUT: the apiserver dialling a webhook Service, a test) or from a
# Pod (FORWARD: a build step's install script). TCP gets a reset (connection refused at once,
# never a timeout), anything else an ICMP port-unreachable.

SERVICE_CIDR=10.0.0.0/24
SERVICE_GUARD_COMMENT=fnbuild-test-cluster-service-range

# One rule per line: CHAIN RULE-SPEC. In the order they stand at the top of each chain.
service_guard_rules() {
    local chain
    for chain in OUTPUT FORWARD; do
        echo "$chain -d $SERVICE_CIDR -p tcp -m comment --comment $SERVICE_GUARD_COMMENT -j REJECT --reject-with tcp-reset"
        echo "$chain -d $SERVICE_CIDR -m comment --comment $SERVICE_GUARD_COMMENT -j REJECT --reject-with icmp-port-unreachable"
    done
}

# Puts the rules at the top of OUTPUT and FORWARD (above Docker's ACCEPTs) unless there already.
ensure_service_guard() {
    local rules=() i chain spec
    mapfile -t rules < <(service_guard_rules)
    # Last first: each goes to position 1, so they end up in service_guard_rules' order.
    for ((i = ${#rules[@]} - 1; i >= 0; i--)); do
        chain=${rules[$i]%% *}; spec=${rules[$i]#* }
        # shellcheck disable=SC2086
        iptables -w -C "$chain" $spec 2>/dev/null || iptables -w -I "$chain" 1 $spec ||
            { echo "cluster: cannot add the iptables rule '$chain $spec'" >&2; return 1; }
    done
}

# Whether a kube-apiserver still runs on this machine (another test cluster's, which still needs
# the rules: they are the machine's, not one cluster's).
other_apiserver_runs() {
    local exe
    for exe in /proc/[0-9]*/exe; do
        [ "$(basename "$(readlink "$exe" 2>/dev/null)" 2>/dev/null)" = kube-apiserver ] && return 0
    done
    return 1
}

# Removes exactly those rules (every copy of them); nothing else.
remove_service_guard() {
    command -v iptables >/dev/null 2>&1 || return 0
    local rule chain spec
    while read -r rule; do
        chain=${rule%% *}; spec=${rule#* }
        # shellcheck disable=SC2086
        while iptables -w -C "$chain" $spec 2>/dev/null; do
            iptables -w -D "$chain" $spec || break
        done
    done < <(service_guard_rules)
}
