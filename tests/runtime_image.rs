//! `fnbuild build --runtime-image IMAGE` (Kyma's `spec.runtimeImageOverride`) end to end: the
//! runtime image is made here from a test base with umoci, carrying a stand-in for a Kyma runtime
//! server (it loads the function the way Kyma's servers do: `HANDLER_PATH` relative to its own
//! directory for Node, `FUNCTION_PATH`/`MOD_NAME` for Python). fnbuild adds the function and its
//! packages; the image is pushed to a real registry, checked with skopeo and run by Docker, and
//! the answer must come from the image's own server, using the function's dependency.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A Kyma-style Node server: `HANDLER_PATH` resolved against its directory, `FUNC_HANDLER`
/// called, `FUNC_PORT` listened on. It says who answered, so the test knows which server ran.
const NODE_SERVER: &str = r#"
const http = require('http');
const path = require('path');
const mod = require(path.join(__dirname, process.env.HANDLER_PATH));
const handler = mod[process.env.FUNC_HANDLER];
http.createServer(async (req, res) => {
  const out = await handler({ data: null, extensions: { request: req } }, {});
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ server: 'stand-in', out, runtime: process.env.FUNC_RUNTIME, cwd: process.cwd(), uid: process.getuid() }));
}).listen(Number(process.env.FUNC_PORT));
"#;

/// A Kyma-style Python server (Kyma's is /kubeless.py): the module `MOD_NAME` from `FUNCTION_PATH`.
const PYTHON_SERVER: &str = r#"
import importlib.util, json, os, http.server
path = os.path.join(os.environ["FUNCTION_PATH"], os.environ["MOD_NAME"] + ".py")
spec = importlib.util.spec_from_file_location(os.environ["MOD_NAME"], path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
handler = getattr(mod, os.environ["FUNC_HANDLER"])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"server": "stand-in", "out": handler({"data": None}, {}),
                           "runtime": os.environ.get("FUNC_RUNTIME"), "cwd": os.getcwd(), "uid": os.getuid()})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

http.server.HTTPServer(("", int(os.environ["FUNC_PORT"])), Handler).serve_forever()
"#;

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A copy of the base layout `layout` (tag `tag`) with `server` at `at` and a Cmd that starts
/// it, tagged `kyma`, made by umoci: `oci:DIR:kyma`. `workdir` as the image's, if any.
fn runtime_image(
    layout: &Path,
    tag: &str,
    server: &str,
    at: &str,
    cmd: &[&str],
    workdir: Option<&str>,
) -> (tempfile::TempDir, String) {
    let dir = temp_dir("runtime-image-");
    let copy = dir.path().join("layout");
    run_ok(Command::new("cp").arg("-a").arg(layout).arg(&copy));
    let file = dir.path().join("server");
    write(&file, server);
    let image = format!("{}:{tag}", copy.display());
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&file)
            .arg(at),
    );
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image, "--tag", "kyma"]);
    for c in cmd {
        config.arg(format!("--config.cmd={c}"));
    }
    if let Some(w) = workdir {
        config.arg(format!("--config.workingdir={w}"));
    }
    run_ok(&mut config);
    let reference = format!("oci:{}:kyma", copy.display());
    (dir, reference)
}

fn build(src: &Path, runtime: &str, runtime_image: &str, push: &str) -> Value {
    let out = run_ok(fnbuild().arg("build").arg(src).args([
        "--runtime",
        runtime,
        "--runtime-image",
        runtime_image,
        "--push",
        push,
        "--json",
    ]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("build --json: {e}\n{out}"))
}

fn roles(result: &Value) -> Vec<String> {
    let layers = result["layers"].as_array().expect("layers");
    let ours: Vec<String> = layers.iter().map(|l| l["role"].as_str().unwrap().to_string()).collect();
    ours.into_iter().filter(|r| r != "base").collect()
}

fn env(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// The image's own server answers GET / as a Kyma Pod runs it (non-root, read-only root).
fn answer(image: &str) -> Value {
    let container = docker_run_detached(image, &["--read-only", "--tmpfs", "/tmp", "--user", "1000"]);
    let (status, _, body) = http_get(&container.url());
    assert_eq!(status, 200, "{image}: {body}\n{}", container.logs());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{image}: {e}: {body}"))
}

#[test]
fn a_node_runtime_images_own_server_runs_the_function_and_its_dependency() {
    let registry = Registry::start();
    let (_keep, image) = runtime_image(
        &base_images().node_layout_for("24"),
        "24",
        NODE_SERVER,
        "/usr/src/app/server.js",
        &["node", "/usr/src/app/server.js"],
        None,
    );
    // The function needs a package: from a local tarball, installed with npm.
    let lib = temp_dir("greet-src-");
    write(
        &lib.path().join("package.json"),
        r#"{"name":"greet","version":"1.0.0","main":"index.js"}"#,
    );
    write(
        &lib.path().join("index.js"),
        "module.exports = (who) => 'hello ' + who + ' from greet';\n",
    );
    let src = temp_dir("fn-override-node-");
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: () => require('greet')('kyma') };\n",
    );
    write(
        &src.path().join("package.json"),
        r#"{"name":"f","version":"1.0.0","dependencies":{"greet":"file:vendor/greet-1.0.0.tgz"}}"#,
    );
    std::fs::create_dir_all(src.path().join("vendor")).unwrap();
    run_ok(
        Command::new("npm")
            .current_dir(lib.path())
            .args(["pack", "--silent", "--pack-destination"])
            .arg(src.path().join("vendor")),
    );

    let result = build(src.path(), "nodejs24", &image, &registry.image("fn/override-node:1"));
    let tagged = format!("docker://{}", registry.image("fn/override-node:1"));
    // No server, libraries or entrypoint of fnbuild's: only the function and its packages.
    assert_eq!(roles(&result), ["dependencies", "function"], "{result}");
    let pushed = result["outputs"][0]["image"].as_str().unwrap().to_string();
    let config = skopeo_inspect_config(&tagged);
    let run = &config["config"];
    assert_eq!(
        run["Cmd"],
        serde_json::json!(["node", "/usr/src/app/server.js"]),
        "the image's Cmd is kept"
    );
    assert!(run.get("Entrypoint").is_none_or(Value::is_null), "{run}");
    // What the image left unset is Kyma's: its Dockerfile's WORKDIR and USER.
    assert_eq!(run["User"], "1000");
    assert_eq!(run["WorkingDir"], "/usr/src/app");
    let e = env(&config);
    for want in [
        "HANDLER_PATH=./function/handler.js",
        "FUNC_HANDLER=main",
        "FUNC_RUNTIME=nodejs24",
        "FUNC_PORT=8080",
        "NODE_VERSION=24.22.3",
    ] {
        assert!(e.contains(&want.to_string()), "{want} in {e:?}");
    }

    let got = answer(&pushed);
    assert_eq!(got["server"], "stand-in", "{got}");
    assert_eq!(got["out"], "hello kyma from greet", "{got}");
    assert_eq!(got["runtime"], "nodejs24");
    assert_eq!(got["cwd"], "/usr/src/app");
}

#[test]
fn a_python_runtime_images_own_server_runs_the_function_with_its_packages_first_on_the_path() {
    let registry = Registry::start();
    // The image names its own working directory: it is kept.
    let (_keep, image) = runtime_image(
        &base_images().python,
        PYTHON_TAG,
        PYTHON_SERVER,
        "/kubeless.py",
        &["python3", "/kubeless.py"],
        Some("/"),
    );
    let src = temp_dir("fn-override-python-");
    write(
        &src.path().join("handler.py"),
        "import six\n\ndef main(event, context):\n    return 'six ' + six.__version__ + ' from ' + six.__file__.rsplit('/', 1)[0]\n",
    );
    write(&src.path().join("requirements.txt"), "six==1.16.0\n");

    let result = build(src.path(), "python312", &image, &registry.image("fn/override-python:1"));
    let tagged = format!("docker://{}", registry.image("fn/override-python:1"));
    assert_eq!(roles(&result), ["dependencies", "function"], "{result}");
    let pushed = result["outputs"][0]["image"].as_str().unwrap().to_string();
    let config = skopeo_inspect_config(&tagged);
    let run = &config["config"];
    assert_eq!(run["Cmd"], serde_json::json!(["python3", "/kubeless.py"]));
    assert_eq!(run["WorkingDir"], "/");
    assert_eq!(run["User"], "1000");
    let e = env(&config);
    for want in [
        "FUNCTION_PATH=/kubeless",
        "MOD_NAME=handler",
        "PYTHONPATH=/kubeless/lib",
        "PYTHON_VERSION=3.12.1",
    ] {
        assert!(e.contains(&want.to_string()), "{want} in {e:?}");
    }

    let got = answer(&pushed);
    assert_eq!(got["server"], "stand-in", "{got}");
    assert_eq!(got["out"], "six 1.16.0 from /kubeless/lib", "{got}");
    assert_eq!(got["cwd"], "/");
}

#[test]
fn a_runtime_image_that_starts_nothing_is_refused_in_one_line_and_nothing_is_pushed() {
    let registry = Registry::start();
    let dir = temp_dir("runtime-image-bare-");
    let copy = dir.path().join("layout");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(base_images().node_layout_for("24"))
            .arg(&copy),
    );
    run_ok(
        Command::new("umoci")
            .args(["config", "--image"])
            .arg(format!("{}:24", copy.display()))
            .args(["--clear=config.cmd"]),
    );
    let src = temp_dir("fn-override-bare-");
    write(
        &src.path().join("handler.js"),
        "module.exports = { main: () => 'hi' };\n",
    );
    let push = registry.image("fn/bare:1");
    let out = fnbuild()
        .arg("build")
        .arg(src.path())
        .args(["--runtime", "nodejs24", "--runtime-image"])
        .arg(format!("oci:{}:24", copy.display()))
        .args(["--push", &push])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("has no Entrypoint and no Cmd"), "{stderr}");
    let (status, _, _) = http_get(&format!("{}/v2/fn/bare/tags/list", registry.url()));
    assert_eq!(status, 404, "nothing pushed");

    // --runtime-image and --base name the same thing two ways: one of them.
    let out = fnbuild()
        .arg("build")
        .arg(src.path())
        .args(["--runtime", "nodejs24", "--runtime-image", "x:1", "--base", "y:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
