// The runtimes/ and templates/ trees are compiled into the binary (include_dir!); rebuild when it changes.
fn main() {
    println!("cargo:rerun-if-changed=runtimes");
    println!("cargo:rerun-if-changed=templates");
}
