"""Support for the end-to-end suite: a real ComfyUI server, UI-to-API workflow conversion, tiny models.

Nothing here imports ComfyUI at module level: the conversion helpers are plain Python (the validation test
uses them without ComfyUI), and the model writers import ComfyUI inside the functions that need it.

- `ComfyUIServer`: starts `main.py --cpu` of the checkout at COMFYUI_PATH on a loopback port with a base
  directory of its own (models, custom_nodes, input, output, user), waits for `/object_info`, and always stops.
- `ui_to_api(workflow, object_info)`: a UI-format workflow (what the frontend saves) to the API format that
  `POST /prompt` takes, with widget values mapped to input names by the order `/object_info` gives.
- `ui_widget_inputs(spec)`: the widget inputs of a node in UI order, with the slot taken by a seed's
  "control_after_generate" value (the frontend adds that widget to INT inputs flagged with it and to any INT
  input named `seed` or `noise_seed`; it is saved in widgets_values but never sent to the server).
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Node types that only exist in the frontend: never part of an API-format prompt.
FRONTEND_ONLY_NODE_TYPES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
# Widget kinds of V1 input specs ("COMBO" is how V3 nodes spell a list of options).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_AFTER_GENERATE = "control_after_generate"
SEED_INPUT_NAMES = {"seed", "noise_seed"}
# Node modes in UI workflows: 0 always, 2 never (muted), 4 bypass.
MODE_ALWAYS = 0


class ConversionError(ValueError):
    """A UI workflow that does not match the node definitions it is converted against."""


# ---------------------------------------------------------------------------------------------------------------
# Input specs (the shape /object_info gives: {"input": {"required": {...}, "optional": {...}}, "input_order": ...})
# ---------------------------------------------------------------------------------------------------------------

def is_widget_input(input_spec):
    """True when the frontend shows this input as a widget (a value on the node), not as a socket."""
    kind = input_spec[0]
    options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def has_control_after_generate(name, input_spec):
    """True when the frontend adds a "control after generate" widget right after this input's widget."""
    kind = input_spec[0]
    options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return kind == "INT" and name in SEED_INPUT_NAMES


def ordered_inputs(node_info):
    """[(name, spec)] of a node's required then optional inputs, in definition order."""
    inputs = node_info["input"]
    order = node_info.get("input_order")
    result = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = order.get(section, list(specs)) if order else list(specs)
        result.extend((name, specs[name]) for name in names)
    return result


DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a V3 combo whose chosen option brings widgets of its own (0.3x's SaveVideo)


def ui_widget_inputs(node_info, values=None):
    """Names of the values in a UI node's widgets_values, in order; CONTROL_AFTER_GENERATE marks the extra slot.

    A dynamic combo's value picks one of its options, whose widgets follow it, named `<combo>.<widget>` as the
    frontend names them in the API prompt; `values` (the saved widgets_values) says which option each one holds
    (without it, a dynamic combo counts as one widget). Hidden inputs (`"hidden": true`) show no widget."""
    names = []

    def walk(inputs, prefix):
        for name, spec in inputs:
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if options.get("hidden") or not (is_widget_input(spec) or spec[0] == DYNAMIC_COMBO):
                continue
            names.append(prefix + name)
            if has_control_after_generate(name, spec):
                names.append(CONTROL_AFTER_GENERATE)
            if spec[0] == DYNAMIC_COMBO and values is not None and len(values) >= len(names):
                chosen = [o for o in options.get("options", []) if o["key"] == values[len(names) - 1]]
                nested = chosen[0]["inputs"] if chosen else {}
                walk([(n, s) for section in ("required", "optional")
                      for n, s in (nested.get(section) or {}).items()], f"{prefix}{name}.")

    walk(ordered_inputs(node_info), "")
    return names


def check_widget_value(name, spec, value, check_choices=True):
    """Why `value` does not fit input `name` of `spec`, or None when it fits.

    `check_choices=False` for combos whose options are the user's model files (they differ per install).
    """
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        if check_choices and value not in choices:
            return f"{name}: {value!r} is not one of {choices}"
        return None
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name}: expected an integer, got {value!r}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name}: expected a number, got {value!r}"
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"{name}: expected true/false, got {value!r}"
        return None
    elif kind == "STRING":
        if not isinstance(value, str):
            return f"{name}: expected a string, got {value!r}"
        return None
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            return f"{name}: {value} is below the minimum {options['min']}"
        if "max" in options and value > options["max"]:
            return f"{name}: {value} is above the maximum {options['max']}"
    return None


def widget_values_by_name(node, node_info):
    """{input name: value} from a UI node's widgets_values; raises ConversionError on a count mismatch."""
    values = node.get("widgets_values") or []
    names = ui_widget_inputs(node_info, None if isinstance(values, dict) else values)
    if isinstance(values, dict):  # some V3 nodes save a mapping
        return {name: values[name] for name in names if name in values}
    if len(values) < len(names) and saved_widgets_are_a_prefix(node, names):
        # Widgets core appended to a node after the workflow was saved (0.33's CreateVideo gained bit_depth): the
        # frontend gives them their defaults, as here.
        specs = dict(ordered_inputs(node_info))
        values = list(values) + [widget_default(specs[name]) for name in names[len(values):]]
    if len(values) != len(names):
        raise ConversionError(
            f"node {node['id']} ({node['type']}): {len(values)} widget values for {len(names)} widgets {names}")
    return {name: value for name, value in zip(names, values) if name != CONTROL_AFTER_GENERATE}


def saved_widgets_are_a_prefix(node, names):
    """The widget inputs the saved node lists (the frontend saves each one's name) are the first of `names`, all
    their values are present, and what is missing are later widgets without a control_after_generate slot."""
    saved = [entry["widget"]["name"] for entry in node.get("inputs") or [] if entry.get("widget")]
    current = [name for name in names if name != CONTROL_AFTER_GENERATE]
    if not saved or current[:len(saved)] != saved:
        return False
    present = names.index(current[len(saved)]) if len(saved) < len(current) else len(names)
    return len(node.get("widgets_values") or []) == present and CONTROL_AFTER_GENERATE not in names[present:]


def widget_default(spec):
    """The value the frontend gives a widget the saved workflow does not hold: its default, else a combo's first
    option."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    choices = kind if isinstance(kind, list) else options.get("options", [])
    if choices:
        return choices[0]
    raise ConversionError(f"widget with spec {spec!r} has no default for a workflow saved before it existed")


# ---------------------------------------------------------------------------------------------------------------
# UI workflow structure
# ---------------------------------------------------------------------------------------------------------------

def links_by_id(workflow):
    """{link id: (origin node id, origin slot, target node id, target slot, type)} of a UI workflow."""
    table = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                                 link["type"])
        else:
            link_id, origin_id, origin_slot, target_id, target_slot, link_type = link
            table[link_id] = (origin_id, origin_slot, target_id, target_slot, link_type)
    return table


def link_problems(workflow):
    """Inconsistencies between the `links` table and the nodes' input/output slots (empty list when none)."""
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    table = links_by_id(workflow)
    for link_id, (origin_id, origin_slot, target_id, target_slot, link_type) in table.items():
        origin, target = nodes.get(origin_id), nodes.get(target_id)
        if origin is None or target is None:
            problems.append(f"link {link_id}: node {origin_id if origin is None else target_id} does not exist")
            continue
        outputs, inputs = origin.get("outputs") or [], target.get("inputs") or []
        if origin_slot >= len(outputs) or link_id not in (outputs[origin_slot].get("links") or []):
            problems.append(f"link {link_id}: output {origin_slot} of node {origin_id} does not list it")
        elif outputs[origin_slot]["type"] != link_type and link_type != "*":
            problems.append(f"link {link_id}: type {link_type} but output is {outputs[origin_slot]['type']}")
        if target_slot >= len(inputs) or inputs[target_slot].get("link") != link_id:
            problems.append(f"link {link_id}: input {target_slot} of node {target_id} does not hold it")
        elif inputs[target_slot]["type"] != link_type and "*" not in (link_type, inputs[target_slot]["type"]):
            problems.append(f"link {link_id}: type {link_type} but input is {inputs[target_slot]['type']}")
    for node in workflow["nodes"]:
        for slot, node_input in enumerate(node.get("inputs") or []):
            if node_input.get("link") is not None and node_input["link"] not in table:
                problems.append(f"node {node['id']} input {slot}: link {node_input['link']} is not in `links`")
        for slot, output in enumerate(node.get("outputs") or []):
            for link_id in output.get("links") or []:
                if link_id not in table:
                    problems.append(f"node {node['id']} output {slot}: link {link_id} is not in `links`")
    ids = [node["id"] for node in workflow["nodes"]]
    if len(ids) != len(set(ids)):
        problems.append("node ids are not unique")
    if workflow.get("last_node_id") is not None and max(ids) > workflow["last_node_id"]:
        problems.append(f"last_node_id {workflow['last_node_id']} is below the largest node id {max(ids)}")
    if table and workflow.get("last_link_id") is not None and max(table) > workflow["last_link_id"]:
        problems.append(f"last_link_id {workflow['last_link_id']} is below the largest link id {max(table)}")
    return problems


def ui_to_api(workflow, object_info, overrides=None):
    """Convert a UI-format workflow to an API-format prompt {node id: {"class_type", "inputs"}}.

    Frontend-only nodes (notes, primitives, reroutes) and nodes that are not in mode "always" are left out.
    `overrides`: {node id or node type: {input name: value}} applied after conversion (a value may be a
    link `[node id, slot]`).
    """
    table = links_by_id(workflow)
    prompt = {}
    for node in workflow["nodes"]:
        node_type = node["type"]
        if node_type in FRONTEND_ONLY_NODE_TYPES or node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
            continue
        if node_type not in object_info:
            raise ConversionError(f"node {node['id']}: type {node_type!r} is not known to the server")
        inputs = widget_values_by_name(node, object_info[node_type])
        for node_input in node.get("inputs") or []:
            if node_input.get("link") is None:
                continue
            origin_id, origin_slot = table[node_input["link"]][:2]
            inputs[node_input["name"]] = [str(origin_id), origin_slot]
        prompt[str(node["id"])] = {"class_type": node_type, "inputs": inputs}
    for key, values in (overrides or {}).items():
        targets = [node_id for node_id, entry in prompt.items() if key in (node_id, entry["class_type"])]
        if not targets:
            raise ConversionError(f"override {key!r} matches no node")
        for node_id in targets:
            prompt[node_id]["inputs"].update(values)
    return prompt


def drop_unreferenced(prompt, keep_types=()):
    """Remove nodes whose outputs nothing uses, except output nodes of `keep_types` (repeats until stable)."""
    while True:
        used = {value[0] for entry in prompt.values() for value in entry["inputs"].values()
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)}
        unused = [node_id for node_id, entry in prompt.items()
                  if node_id not in used and entry["class_type"] not in keep_types]
        if not unused:
            return prompt
        for node_id in unused:
            del prompt[node_id]


# ---------------------------------------------------------------------------------------------------------------
# A ComfyUI server of our own
# ---------------------------------------------------------------------------------------------------------------

def free_port(first=8305, last=8309):
    """The first loopback port in [first, last] nobody listens on (the UI engineer's range)."""
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {first}..{last}")


class ComfyUIServer:
    """`python main.py --cpu` of a ComfyUI checkout, on 127.0.0.1:`port`, with its own base directory."""

    def __init__(self, comfyui_path, base_directory, port, python=None, extra_args=()):
        self.comfyui_path = os.path.abspath(comfyui_path)
        self.base_directory = os.path.abspath(base_directory)
        self.port = port
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.process = None
        self.log_path = os.path.join(self.base_directory, "comfyui.log")
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout=240):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is already in use: another server would answer our requests")
        for sub in ("models", "custom_nodes", "input", "output", "user", "temp"):
            os.makedirs(os.path.join(self.base_directory, sub), exist_ok=True)
        command = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--base-directory", self.base_directory,
                   "--database-url", "sqlite:///:memory:", *self.extra_args]
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        # Two cores shared with other work: keep the server's torch to one thread.
        environment.setdefault("OMP_NUM_THREADS", "1")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.comfyui_path, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=environment, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get_json("/object_info/KSampler", timeout=5)
                # Another server may have taken the port since the probe above: ours says it is listening only
                # after its bind succeeded.
                if self.process.poll() is None and f"127.0.0.1:{self.port}" in self.log():
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s; log:\n{self.log()[-4000:]}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def get_json(self, path, timeout=60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def get_bytes(self, path, timeout=60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type"), response.read()

    def queue_prompt(self, prompt, client_id="speculative-video-e2e", extra_pnginfo=None):
        """POST /prompt; returns the prompt id, or raises with the server's validation errors."""
        body = {"prompt": prompt, "client_id": client_id}
        if extra_pnginfo is not None:
            body["extra_data"] = {"extra_pnginfo": extra_pnginfo}
        request = urllib.request.Request(self.url + "/prompt", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["prompt_id"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"/prompt refused the workflow: {error.read().decode(errors='replace')}") from None

    def wait_for_history(self, prompt_id, timeout=900, poll=1.0):
        """The /history entry of `prompt_id` once it has finished (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running; log:\n{self.log()[-4000:]}")
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")


def output_files(history_entry):
    """[(node id, {"filename", "subfolder", "type"})] of every file the run's output nodes reported."""
    files = []
    for node_id, output in history_entry.get("outputs", {}).items():
        for key in ("images", "gifs", "videos", "animated", "video"):
            for item in output.get(key) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append((node_id, item))
    return files


def history_error(history_entry):
    """The execution error message of a failed run (node type, exception and traceback), or ''."""
    for message_type, data in history_entry.get("status", {}).get("messages", []):
        if message_type == "execution_error":
            return (f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_type')}: "
                    f"{data.get('exception_message')}\n" + "".join(data.get("traceback") or []))
    return ""


def link_into(directory, source, name):
    """Symlink `source` as `directory/name` (replacing an older link of that name)."""
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, name)
    if os.path.islink(target):
        os.unlink(target)
    os.symlink(os.path.abspath(source), target)
    return target
