"""Our server against Kyma's recorded answers (kyma/README.md): every case of kyma/cases.py is
sent to our server running kyma/probe_handler.py, and its answer compared with what Kyma's
python312 server answered (kyma/kyma-answers.json), except for the DEVIATIONS, where Kyma's answer
is a bug and ours is asserted instead."""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "kyma"))

from cases import CASES  # noqa: E402
from client import Proxy, metric_families, run_all, send  # noqa: E402
from test_server import Server  # noqa: E402

with open(os.path.join(HERE, "kyma", "kyma-answers.json")) as f:
    KYMA = json.load(f)

# Where we answer otherwise on purpose: case → (why, a check of our answer).
DEVIATIONS = {
    "data json chunked": ("Kyma's cheroot+Bottle cannot read a chunked body (400); ours reads it",
                          lambda a: a["status"] == 200 and a["json"]["data"] == {"c": 1}),
    "return exit": ("a handler raising SystemExit kills Kyma's call thread: no answer until FUNC_TIMEOUT's 408; ours: 500 at once",
                    lambda a: a["status"] == 500 and a["body"] == "Internal server error"),
    "return keyboard": ("the same for KeyboardInterrupt", lambda a: a["status"] == 500 and a["body"] == "Internal server error"),
    "return coroutine": ("a coroutine (an async handler's result) is awaited; Kyma's Bottle cannot send it: 500",
                         lambda a: a["status"] == 200 and a["body"] == "later"),
}
# Fields of the `req` answers that cannot be equal: the request class's name (Kyma's
# PicklableBottleRequest, ours FunctionRequest; both are Bottle BaseRequests).
UNCOMPARABLE_FIELDS = {"type"}


def comparable(answer, kyma):
    """An answer as compared: Content-Length only present or not (bodies naming the server's
    port differ in length; the bodies themselves are compared), and not at all where Kyma's
    cheroot streamed the body without one (we always send a length)."""
    answer = json.loads(json.dumps(answer))
    for a in (answer,):
        headers = a.get("headers", {})
        if "content-length" in headers:
            headers["content-length"] = "<n>"
        if "content-length" not in kyma.get("headers", {}):
            headers.pop("content-length", None)
        if isinstance(a.get("json"), dict):
            for k in UNCOMPARABLE_FIELDS:
                a["json"].pop(k, None)
    return answer


class KymaAnswers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = Proxy()
        with open(os.path.join(HERE, "kyma", "probe_handler.py")) as f:
            handler = f.read()
        cls.server = Server({"handler.py": handler}, FUNC_TIMEOUT="2", FUNC_NAME="probe", SERVICE_NAMESPACE="ns",
                            FUNC_RUNTIME="python312", FUNC_MEMFILE_MAX="65536",
                            PUBLISHER_PROXY_ADDRESS=f"http://127.0.0.1:{cls.proxy.port}/publish",
                            PYTHONPATH=os.environ.get("PYTHONPATH", ""))
        cls.answers = run_all(f"http://127.0.0.1:{cls.server.port}", cls.proxy)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.proxy.server.shutdown()

    def test_answers(self):
        matched, differ = 0, []
        for name in CASES:
            ours, kyma = self.answers[name], KYMA[name]
            if name in DEVIATIONS:
                why, check = DEVIATIONS[name]
                self.assertTrue(check(ours), f"{name} (a deliberate deviation: {why}): {ours}")
                self.assertNotEqual(comparable(ours, kyma), comparable(kyma, kyma), f"{name}: Kyma's answer is ours now")
                continue
            if comparable(ours, kyma) == comparable(kyma, kyma):
                matched += 1
            else:
                differ.append(f"{name}:\n  kyma {json.dumps(comparable(kyma, kyma), ensure_ascii=False)[:1500]}\n"
                              f"  ours {json.dumps(comparable(ours, kyma), ensure_ascii=False)[:1500]}")
        print(f"\n{matched} of {len(CASES)} cases answered as Kyma's server does; {len(DEVIATIONS)} deliberate deviations",
              file=sys.stderr)
        self.assertEqual(differ, [], "\n".join(differ))

    def test_streamed_bodies_get_a_content_length(self):  # deliberate: Kyma's cheroot streams them
        self.assertNotIn("content-length", KYMA["return generator"]["headers"])
        self.assertEqual(self.answers["return generator"]["headers"].get("content-length"), "4")

    def test_metrics_families(self):
        status, _, body, _ = self.server.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(metric_families(body.decode()), KYMA["/metrics families"])


if __name__ == "__main__":
    unittest.main()
