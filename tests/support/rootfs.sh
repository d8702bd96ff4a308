# Sourced by make-base-images.sh and make-builder-image.sh: copying host files into an image's
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
