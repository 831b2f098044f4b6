/* kmsd web UI helpers shared by the onboarding and status pages. DOM text only (no innerHTML),
 * so nothing a server or peer returns is ever interpreted as markup. */
'use strict';

const kmsui = {
  $(id) { return document.getElementById(id); },

  /* Sets the text of element id; empty values read "(empty)" and keep data-value empty. */
  setText(id, value, emptyText) {
    const el = kmsui.$(id);
    const v = value === undefined || value === null ? '' : String(value);
    el.textContent = v !== '' ? v : (emptyText || '(empty)');
    el.classList.toggle('empty', v === '');
    el.dataset.value = v;
    /* nothing to copy: hide the copy button next to an empty value */
    for (const b of document.querySelectorAll('button.copy[data-copy="' + id + '"]'))
      b.classList.toggle('hidden', v === '');
  },

  /* Copies text to the clipboard: the async API in secure contexts, else a selected textarea. */
  async copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.style.position = 'fixed';
    ta.style.opacity = '0';
    document.body.appendChild(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  },

  /* Every button.copy copies the data-value (or text) of the element named by data-copy. */
  wireCopyButtons() {
    for (const b of document.querySelectorAll('button.copy')) {
      b.addEventListener('click', async () => {
        const el = kmsui.$(b.dataset.copy);
        const text = el.dataset.value !== undefined ? el.dataset.value : el.textContent;
        const label = b.textContent;
        try {
          await kmsui.copy(text);
          b.textContent = 'copied';
        } catch (e) {
          b.textContent = 'copy failed';
        }
        setTimeout(() => { b.textContent = label; }, 1500);
      });
    }
  },

  /* GET/POST with a timeout; resolves to {status, json} or throws an Error with a sentence. */
  async request(url, opts, timeoutMs) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    let resp;
    try {
      resp = await fetch(url, Object.assign({ signal: ctl.signal, cache: 'no-store' }, opts));
    } catch (e) {
      if (e.name === 'AbortError')
        throw new Error('no answer from kmsd within ' + Math.round(timeoutMs / 1000) + ' s');
      throw new Error('cannot reach kmsd: ' + e.message);
    } finally {
      clearTimeout(timer);
    }
    const text = await resp.text();
    let json = null;
    try { json = text === '' ? null : JSON.parse(text); } catch (e) { json = null; }
    return { status: resp.status, ok: resp.ok, json: json, text: text };
  },

  /* Onboard pRPC call in JSON; resolves to the answer object, or throws the server's refusal
   * text exactly as sent ({"error": "..."}). */
  async onboardRpc(method, params, timeoutMs) {
    const r = await kmsui.request('/prpc/Onboard.' + method + '?json', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(params || {}),
    }, timeoutMs);
    if (r.json && typeof r.json.error === 'string')
      throw new Error(r.json.error);
    if (!r.ok)
      throw new Error('HTTP ' + r.status + ': ' + r.text);
    return r.json === null ? {} : r.json;
  },

  hex0x(v) {
    if (typeof v !== 'string' || v === '') return '';
    return v.startsWith('0x') ? v : '0x' + v;
  },
};
