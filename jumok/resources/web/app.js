// jumok's page: POST /v1/translate with attention, list the n-best, draw the chosen one's
// attention as a grid (rows: output tokens, columns: source tokens). No library, nothing fetched
// from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the last result: {source_tokens, hypotheses}

const models = {}; // name -> its GET /v1/models entry

async function loadModels() {
  const response = await fetch("/v1/models");
  const body = await response.json();
  for (const m of body.models) {
    models[m.name] = m;
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = `${m.name} (${m.attention} attention)`;
    $("model").appendChild(option);
  }
  $("model").value = body.default;
  useDefaults();
}

// The controls start at the chosen model's own decode settings (its run's decode section).
function useDefaults() {
  const model = models[$("model").value];
  if (!model) return;
  const d = model.decode;
  $("beam").value = d.beam;
  $("nbest").value = d.n_best;
  $("maxlen").value = d.max_length;
  $("defaults").textContent =
    `${model.name}'s defaults (its run's decode section): beam ${d.beam} · ` +
    `n-best ${d.n_best} · max length ${d.max_length}`;
}

// Input the model has never seen is read as <unk>: say so, or its output looks trustworthy.
function showUnknown(result) {
  const warning = $("unknown");
  warning.hidden = result.unknown === 0;
  if (warning.hidden) return;
  const model = models[$("model").value];
  const unit = model && model.tokenizer === "char" ? "characters" : "tokens";
  const total = result.source_tokens.length;
  warning.textContent =
    `${result.unknown} of ${total} ${unit} are unknown to this model (read as <unk>); ` +
    "the output below is a guess.";
}

// A control's number; null (the model's own setting) when it is empty.
function option(id) {
  const value = $(id).value;
  return value === "" ? null : Number(value);
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function translate(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const beam = option("beam");
  const nBest = option("nbest");
  const request = {
    texts: [text],
    model: $("model").value || null,
    attention: true,
    beam: beam,
    n_best: nBest !== null && beam !== null ? Math.min(nBest, beam) : nBest,
    max_length: option("maxlen"),
  };
  status("translating…", false);
  $("go").disabled = true;
  try {
    const response = await fetch("/v1/translate", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = await response.json();
    if (!response.ok) {
      status(`${response.status}: ${body.detail}`, true);
      return;
    }
    current = body.results[0];
    showUnknown(current);
    status(`${body.model} · ${body.elapsed_ms.toFixed(0)} ms`, false);
    showHypotheses();
  } catch (err) {
    status(String(err), true);
  } finally {
    $("go").disabled = false;
  }
}

function showHypotheses() {
  const list = $("hypotheses");
  list.replaceChildren();
  current.hypotheses.forEach((h, i) => {
    const item = document.createElement("li");
    item.className = "hypothesis";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = h.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `log p ${h.score.toFixed(3)} · confidence ${h.confidence.toFixed(3)}`;
    item.append(text, score);
    item.addEventListener("click", () => choose(i));
    list.appendChild(item);
  });
  $("output").hidden = false;
  choose(0);
}

function choose(index) {
  document.querySelectorAll("#hypotheses li").forEach((li, i) => {
    li.classList.toggle("chosen", i === index);
  });
  drawHeatmap(current.source_tokens, current.hypotheses[index]);
}

function drawHeatmap(sourceTokens, hypothesis) {
  const map = $("heatmap");
  map.replaceChildren();
  if (!hypothesis.attention) {
    map.textContent = "This model has no attention.";
    return;
  }
  const header = document.createElement("div");
  header.className = "hm-header";
  const corner = document.createElement("div");
  corner.className = "hm-corner";
  header.appendChild(corner);
  for (const token of sourceTokens) {
    const col = document.createElement("div");
    col.className = "hm-col";
    col.textContent = token;
    header.appendChild(col);
  }
  map.appendChild(header);
  hypothesis.attention.forEach((weights, r) => {
    const row = document.createElement("div");
    row.className = "hm-row";
    const label = document.createElement("div");
    label.className = "hm-label";
    label.textContent = hypothesis.tokens[r];
    row.appendChild(label);
    weights.forEach((w, c) => {
      const cell = document.createElement("div");
      cell.className = "hm-cell";
      cell.style.background = `rgba(31, 78, 160, ${Math.max(w, 0.02).toFixed(3)})`;
      cell.dataset.source = sourceTokens[c];
      cell.dataset.output = hypothesis.tokens[r];
      cell.dataset.weight = w.toFixed(3);
      cell.addEventListener("mousemove", (e) => showTip(e, cell));
      cell.addEventListener("mouseleave", () => ($("tooltip").hidden = true));
      row.appendChild(cell);
    });
    map.appendChild(row);
  });
}

function showTip(event, cell) {
  const tip = $("tooltip");
  tip.textContent = `${cell.dataset.output} ← ${cell.dataset.source}: ${cell.dataset.weight}`;
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

$("form").addEventListener("submit", translate);
$("model").addEventListener("change", useDefaults);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("form").requestSubmit();
  }
});
loadModels().catch((err) => status(`could not list models: ${err}`, true));
