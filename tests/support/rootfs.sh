# Sourced by make-base-images.sh, make-multiarch-bases.sh and make-builder-image.sh: copying host files into an image's
# root filesystem.

# Copies one file into the rootfs under its directory's real path and its own name
# (so /lib/x86_64-linux-gnu/libc.so.6 lands at usr/lib/x86_64-linux-gnu/libc.so.6). A file
# already inside the rootfs stays where it is.
add_file() {
    local root=$1 f=$2 dir
    case "$(readlink -f "$f")" in "$(readlink -f "$root")"/*) return 0 ;; esac
    dir=$(readlink -f "$(dirname "$f")")
    [ -e "$root$dir/$(basename "$f")" ] && return 0
    mkdir -p "$root$dir"
    cp -L --preserve=mode "$f" "$root$dir/$(basename "$f")"
}

# Copies ELF files and every shared library ldd lists for them (and the dynamic loader).
add_elf() {
    local root=$1; shift
    local f lib
    for f in "$@"; do
        add_file "$root" "$f"
        while read -r lib; do
            [ -n "$lib" ] && add_file "$root" "$lib"
        done < <(ldd "$f" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }')
    done
}

# The merged-/usr skeleton every test base starts with, for the architecture whose multiarch
# directory is TRIPLET (x86_64-linux-gnu, aarch64-linux-gnu): /bin, /sbin and /lib as links
# into /usr, /tmp and /var/tmp 1777, /root, /home/app (user 1000), /etc/passwd and /etc/group
# with root and user 1000 ("app"), an nsswitch.conf that reads files.
skeleton_common() {
    local root=$1 triplet=$2
    mkdir -p "$root"/usr/bin "$root"/usr/sbin "$root/usr/lib/$triplet" \
        "$root"/usr/local/bin "$root"/etc "$root"/root "$root"/home/app "$root"/tmp "$root"/var/tmp \
        "$root"/proc "$root"/sys "$root"/dev
    ln -s usr/bin "$root/bin"
    ln -s usr/sbin "$root/sbin"
    ln -s usr/lib "$root/lib"
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 700 "$root/root"
    chown 1000:1000 "$root/home/app"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
    cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
    chmod 644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
}
