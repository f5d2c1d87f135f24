"""The instant LLM double: a loopback Ollama that answers every chat at once.

Diagnosis requests (their answer tool or `format` schema asks for `root_cause`) get the
scripted diagnosis, regression-test requests the scripted test, each in the protocol the
request speaks. Used where the model is not what is under
test: the demo's approval path and the end-to-end benchmark.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.ollama_server import OllamaReply, OllamaServer, answer, tool_call

DEMO_DIAGNOSIS: dict[str, Any] = {
    "summary": "checkout crashes on discount codes the shop does not know",
    "root_cause": "apply_discount() indexes DISCOUNTS[code], so an unknown code raises KeyError",
    "confidence": 0.9,
    "evidence": [{"path": "shop/cart.py", "line": 11}],
    "edits": [
        {
            "path": "shop/cart.py",
            "search": "    rate = DISCOUNTS[code]\n",
            "replace": "    rate = DISCOUNTS.get(code, 0.0)\n",
        }
    ],
}

DEMO_REGRESSION_TEST: dict[str, Any] = {
    "path": "tests/test_unknown_discount_code.py",
    "content": (
        "from shop.cart import total\n\n\n"
        "def test_unknown_code_is_ignored():\n"
        '    assert total([{"price": 10, "qty": 1}], "SPRING24") == 10\n'
    ),
    "explanation": "an unknown code must not crash checkout",
}


def instant_llm(
    diagnosis: dict[str, Any] = DEMO_DIAGNOSIS,
    regression_test: dict[str, Any] = DEMO_REGRESSION_TEST,
) -> OllamaServer:
    def respond(body: dict[str, Any]) -> OllamaReply:
        # Answer the way the request asks: through the answer tool when tools are offered
        # (a model that calls tools natively), as an action in the JSON action protocol, or
        # as the bare answer schema on a forced answer turn.
        shape = json.dumps([body.get("format"), body.get("tools")])
        wanted = diagnosis if "root_cause" in shape else regression_test
        tool = "submit_diagnosis" if wanted is diagnosis else "submit_regression_test"
        offered = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        if tool in offered:
            return tool_call(tool, **wanted)
        if '"action"' in json.dumps(body.get("format")):
            return answer({"action": tool, "arguments": wanted})
        return answer(wanted)

    return OllamaServer(responder=respond)
