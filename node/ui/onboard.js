/* Onboarding page: shows GetAttestationInfo with the kmsctl commands that register it, and
 * drives Onboard.Bootstrap / Onboard.Onboard / GET /finish (the same pRPC kmsctl uses). */
'use strict';

const CALL_TIMEOUT_MS = 180000; /* onboarding waits on a remote KMS and on attestation */
const INFO_FIELDS = ['tee_variant', 'device_id', 'mr_aggregated', 'os_image_hash', 'ppid',
                     'eth_rpc_url', 'kms_contract_address'];
let busy = false;
let lastInfo = {};

/* Single-quoted for a POSIX shell (URLs may hold '&' or '?'). */
function shq(s) {
  return /^[A-Za-z0-9_.:\/@%+=,-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
}

function chainPrefix(info) {
  let p = 'kmsctl chain';
  if (info.eth_rpc_url) p += ' --rpc ' + shq(info.eth_rpc_url);
  if (info.kms_contract_address) p += ' --contract ' + shq(info.kms_contract_address);
  return p;
}

function showInfo(info) {
  for (const f of INFO_FIELDS) {
    const v = f === 'tee_variant' || f === 'eth_rpc_url' || f === 'kms_contract_address'
      ? (info[f] || '') : kmsui.hex0x(info[f] || '');
    kmsui.setText('v-' + f, v, f === 'eth_rpc_url' || f === 'kms_contract_address'
      ? '(not configured on this node)' : '(empty)');
  }
  if (info.site_name) {
    kmsui.setText('site-name', info.site_name + ': kmsd onboarding');
    document.title = info.site_name + ': kmsd onboarding';
  }
  const p = chainPrefix(info);
  kmsui.setText('cmd-device', p + ' add-device ' + kmsui.hex0x(info.device_id));
  kmsui.setText('cmd-mr', p + ' add-mr ' + kmsui.hex0x(info.mr_aggregated));
  kmsui.setText('cmd-image', p + ' add-image ' + kmsui.hex0x(info.os_image_hash));
  kmsui.setText('cmd-check', p + ' is-kms-allowed --device-id ' + kmsui.hex0x(info.device_id) +
    ' --mr-aggregated ' + kmsui.hex0x(info.mr_aggregated) + ' --os-image-hash ' +
    kmsui.hex0x(info.os_image_hash));
  const missing = [];
  if (!info.eth_rpc_url) missing.push('KMS_ETH_RPC_URL (or --rpc URL)');
  if (!info.kms_contract_address) missing.push('KMS_CONTRACT_ADDR (or --contract ADDR)');
  kmsui.$('register-env').textContent = missing.length === 0 ? ''
    : 'This node does not report ' + (missing.length === 2 ? 'its chain settings' : 'all chain settings') +
      ': set ' + missing.join(' and ') + ' for kmsctl.';
}

async function loadInfo() {
  const st = kmsui.$('info-status');
  try {
    const info = await kmsui.onboardRpc('GetAttestationInfo', {}, 60000);
    lastInfo = info;
    showInfo(info);
    st.textContent = 'Attestation verified by this node; register these values before bootstrap or onboard.';
    st.className = 'ok';
  } catch (e) {
    st.textContent = 'Attestation info unavailable: ' + e.message;
    st.className = 'error';
  }
}

/* Runs one call with a progress line that counts seconds; shows the refusal text verbatim. */
async function run(label, fn) {
  if (busy) return;
  busy = true;
  for (const b of document.querySelectorAll('#setup button[type=submit], #finish'))
    b.disabled = true;
  const prog = kmsui.$('progress');
  const err = kmsui.$('error');
  const t0 = Date.now();
  const tick = () => { prog.textContent = label + ' (' + Math.floor((Date.now() - t0) / 1000) + ' s)'; };
  err.classList.add('hidden');
  kmsui.$('result').classList.add('hidden');
  prog.classList.remove('hidden');
  tick();
  const timer = setInterval(tick, 1000);
  try {
    await fn();
    prog.classList.add('hidden');
  } catch (e) {
    prog.classList.add('hidden');
    err.textContent = e.message;
    err.classList.remove('hidden');
  } finally {
    clearInterval(timer);
    busy = false;
    for (const b of document.querySelectorAll('#setup button[type=submit], #finish'))
      b.disabled = false;
  }
}

function showResult(title, obj, setinfo) {
  kmsui.$('result-title').textContent = title;
  kmsui.setText('result-json', JSON.stringify(obj, null, 2));
  kmsui.$('setinfo').classList.toggle('hidden', !setinfo);
  kmsui.$('result').classList.remove('hidden');
}

async function bootstrap(ev) {
  ev.preventDefault();
  const domain = kmsui.$('bootstrap-domain').value.trim();
  await run('Bootstrapping: generating the root keys and attesting them', async () => {
    const r = await kmsui.onboardRpc('Bootstrap', { domain: domain }, CALL_TIMEOUT_MS);
    showResult('Bootstrap done: root keys generated for ' + domain + '.', {
      caPubkey: kmsui.hex0x(r.ca_pubkey),
      k256Pubkey: kmsui.hex0x(r.k256_pubkey),
      attestation: kmsui.hex0x(r.attestation),
    }, true);
    kmsui.setText('cmd-setinfo', chainPrefix(lastInfo) + ' set-info kms-info.json');
  });
}

async function onboard(ev) {
  ev.preventDefault();
  const req = {
    source_url: kmsui.$('onboard-source').value.trim(),
    domain: kmsui.$('onboard-domain').value.trim(),
  };
  const pinK = kmsui.$('onboard-pin-k256').value.trim();
  const pinCa = kmsui.$('onboard-pin-ca').value.trim();
  if (pinK !== '') req.expect_k256_pubkey = pinK;
  if (pinCa !== '') req.expect_ca_spki = pinCa;
  await run('Onboarding from ' + req.source_url +
            ': attested TLS to the source, checking it, receiving the keys', async () => {
    const r = await kmsui.onboardRpc('Onboard', req, CALL_TIMEOUT_MS);
    showResult('Onboard done: this node holds the cluster keys of ' + req.source_url + '.',
               { k256Pubkey: kmsui.hex0x(r.k256_pubkey) }, false);
  });
}

async function finish() {
  await run('Finishing', async () => {
    const r = await kmsui.request('/finish', { method: 'GET' }, 30000);
    if (!r.ok)
      throw new Error(r.json && typeof r.json.error === 'string' ? r.json.error
                                                                 : 'HTTP ' + r.status + ': ' + r.text);
    const url = 'https://' + location.host + '/status';
    const done = kmsui.$('finished');
    done.textContent = 'Setup finished: kmsd now serves keys over HTTPS on its --listen address ' +
      '(status page: ' + url + ' when --onboard-listen is not set). You can close this window.';
    done.classList.remove('hidden');
    for (const b of document.querySelectorAll('#setup button[type=submit], #finish'))
      b.remove();
  });
}

document.addEventListener('DOMContentLoaded', () => {
  kmsui.wireCopyButtons();
  kmsui.$('bootstrap-form').addEventListener('submit', bootstrap);
  kmsui.$('onboard-form').addEventListener('submit', onboard);
  kmsui.$('finish').addEventListener('click', finish);
  loadInfo();
});
