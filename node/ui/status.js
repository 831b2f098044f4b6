/* Status page: polls /status.json (state, peers, counters) and derives per-minute rates of key
 * releases and refusals from its own samples of the counters over the last minute. */
'use strict';

const POLL_MS = 2000;
const WINDOW_MS = 60000;
const samples = []; /* {t, released, refused}, oldest first, spanning at most WINDOW_MS */

/* Refused key requests: attested RPCs (GetAppKey, GetKmsKey, SignCert...) answered with an
 * error, whatever the reason; the reason counters cover the attestation (none presented, or
 * invalid), policy and input refusals, "other" the rest (backend or internal errors). */
function refusals(c) {
  return c.attested_failures;
}

function otherRefusals(c) {
  return Math.max(0, c.attested_failures - c.refusals_attestation - c.refusals_policy -
                  c.refusals_input);
}

/* Events per minute as seen in the page's samples of the last minute: the count over the
 * window, divided by a full minute while fewer than 60 s have been sampled (no extrapolation
 * from a few seconds). */
function rate(key) {
  if (samples.length < 2) return null;
  const a = samples[0];
  const b = samples[samples.length - 1];
  const dt = b.t - a.t;
  if (dt <= 0) return null;
  return (b[key] - a[key]) * 60000 / Math.max(dt, WINDOW_MS);
}

function fmtRate(r) {
  return r === null ? 'measuring' : (Math.round(r * 10) / 10).toFixed(1);
}

function badge(id, text) {
  const el = kmsui.$(id);
  el.textContent = text;
  el.className = 'badge ' + text;
}

function peerRow(p) {
  const tr = document.createElement('tr');
  const cells = [p.url + (p.origin ? ' (' + p.origin + ')' : ''), null,
    p.status === 'up' ? 'consistent' : p.status === 'inconsistent' ? 'MISMATCH'
      : p.status === 'pending' ? 'candidate: not yet confirmed' : 'not checked',
    p.reason || '', p.last_check ? new Date(p.last_check * 1000).toISOString() +
      (p.latency_ms !== null ? ' (' + p.latency_ms + ' ms)' : '') : 'never'];
  for (let i = 0; i < cells.length; i++) {
    const td = document.createElement('td');
    if (i === 1) {
      const b = document.createElement('span');
      b.className = 'badge ' + p.status;
      b.textContent = p.status;
      td.appendChild(b);
    } else {
      td.textContent = cells[i];
    }
    if (i === 0) td.className = 'mono val';
    tr.appendChild(td);
  }
  return tr;
}

function show(s) {
  const c = s.counters;
  badge('state', s.state);
  if (s.name) {
    kmsui.$('title').textContent = s.name + ': kmsd status';
    document.title = s.name + ': kmsd status';
  }
  kmsui.$('sim-warning').classList.toggle('hidden', !s.insecure_simulation);
  kmsui.setText('self-auth', s.self_authorized ? 'authorized' : s.reason ? 'refused: ' + s.reason
                                                             : 'no keys yet');
  kmsui.setText('domain', s.domain, '(no keys yet)');
  kmsui.setText('k256', s.k256_pubkey, '(no keys yet)');
  kmsui.setText('ca', s.ca_pubkey, '(no keys yet)');

  samples.push({ t: s.time_ms, released: c.keys_released, refused: refusals(c) });
  while (samples.length > 2 && samples[samples.length - 1].t - samples[0].t > WINDOW_MS)
    samples.shift();
  kmsui.setText('released-rate', fmtRate(rate('released')));
  kmsui.setText('refusals-rate', fmtRate(rate('refused')));
  kmsui.setText('released-total', c.keys_released);
  kmsui.setText('refusals-total', refusals(c));
  kmsui.setText('ref-attestation', c.refusals_attestation);
  kmsui.setText('ref-policy', c.refusals_policy);
  kmsui.setText('ref-input', c.refusals_input);
  kmsui.setText('ref-other', otherRefusals(c));
  kmsui.setText('rpc-total', c.rpc_requests);
  const span = samples.length > 1 ? samples[samples.length - 1].t - samples[0].t : 0;
  kmsui.$('rate-window').textContent = 'Per minute: events seen in the last ' +
    Math.round(span / 1000) + ' s of this page\'s samples (a full minute once the page has been ' +
    'open that long).';

  const tbody = kmsui.$('peers');
  tbody.replaceChildren(...s.peers.map(peerRow));
  const bad = s.peers.filter((p) => p.status === 'inconsistent').length;
  const down = s.peers.filter((p) => p.status === 'down').length;
  const ok = s.peers.filter((p) => p.status === 'up').length;
  const pending = s.peers.filter((p) => p.status === 'pending').length;
  kmsui.setText('identity-check', s.peers.length === 0 ? 'No peers configured.'
    : bad > 0 ? bad + ' of ' + s.peers.length + ' peers hold a DIFFERENT identity.'
    : ok + ' of ' + s.peers.length + ' peers hold the same identity' +
      (down > 0 ? '; ' + down + ' unreachable' : '') +
      (pending > 0 ? '; ' + pending + ' onboarded candidate(s) awaiting confirmation' : '') + '.');
  kmsui.$('updated').textContent = 'last update ' + new Date(s.time_ms).toISOString();
}

async function poll() {
  const err = kmsui.$('fetch-error');
  try {
    const r = await kmsui.request('/status.json', { method: 'GET' }, 10000);
    if (!r.ok || r.json === null) throw new Error('HTTP ' + r.status + ': ' + r.text);
    show(r.json);
    err.classList.add('hidden');
  } catch (e) {
    err.textContent = 'Cannot read /status.json: ' + e.message;
    err.classList.remove('hidden');
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  kmsui.wireCopyButtons();
  poll();
});
