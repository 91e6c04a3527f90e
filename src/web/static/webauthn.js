// Hardware keys for Portcullis (served at /static/webauthn.js; the CSP
// allows scripts from the gate only, and this is the only one). Two pages
// use it: registering a key (#key-enroll) and approving an SSH login
// (#key-approve). It asks the gate for the options, lets the browser talk
// to the key, and sends the answer back; the gate checks everything.
"use strict";
(function () {
  const KNOWN_TRANSPORTS = ["usb", "nfc", "ble", "internal", "hybrid"];

  function fromB64u(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function toB64u(buf) {
    const bytes = new Uint8Array(buf);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  // The page's status line.
  function shower(status) {
    return function (text, isError) {
      status.textContent = text;
      status.className = isError ? "error" : "note";
      status.hidden = false;
    };
  }
  // A JSON call of the page (CSRF value in a header); its answer or an
  // Error with the gate's message.
  function poster(main) {
    return async function (path, body) {
      const r = await fetch(main.dataset.base + path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": main.dataset.csrf },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      let data = {};
      try { data = await r.json(); } catch (e) { /* not JSON */ }
      if (!r.ok) throw new Error(data.error || ("The gate answered " + r.status + "."));
      return data;
    };
  }
  function usable() {
    return !!(window.PublicKeyCredential && navigator.credentials);
  }
  const UNUSABLE = "This browser cannot use hardware keys: open the link in a current Chrome, Edge, Firefox or Safari.";
  function cancelled(e) {
    return e && (e.name === "NotAllowedError" || e.name === "AbortError");
  }

  function enrollPage(main) {
    const show = shower(document.getElementById("status"));
    const status = document.getElementById("status");
    const post = poster(main);
    const nameInput = document.getElementById("key-name");
    const buttons = Array.from(document.querySelectorAll("button[data-platform]"));
    const done = document.getElementById("done");
    async function register(platform) {
      buttons.forEach(b => { b.disabled = true; });
      try {
        show("Asking the gate…", false);
        const opts = await post("/options", { platform: platform });
        const pk = opts.publicKey;
        pk.challenge = fromB64u(pk.challenge);
        pk.user.id = fromB64u(pk.user.id);
        (pk.excludeCredentials || []).forEach(c => { c.id = fromB64u(c.id); });
        show(platform ? "Confirm on this device…" : "Insert your security key and touch it…", false);
        const cred = await navigator.credentials.create({ publicKey: pk });
        const r = cred.response;
        const transports = (r.getTransports ? r.getTransports() : []).filter(t => KNOWN_TRANSPORTS.includes(t));
        const answer = await post("/finish", {
          ceremony: opts.ceremony,
          name: nameInput.value,
          attachment: cred.authenticatorAttachment || null,
          credential: {
            id: cred.id,
            rawId: toB64u(cred.rawId),
            type: cred.type,
            response: {
              attestationObject: toB64u(r.attestationObject),
              clientDataJSON: toB64u(r.clientDataJSON),
              transports: transports,
            },
            extensions: {},
          },
        });
        main.querySelector("form").hidden = true;
        status.hidden = true;
        done.querySelector(".key-name").textContent = answer.key.name;
        done.hidden = false;
      } catch (e) {
        show(cancelled(e) ? "The key was not used (cancelled, or it took too long). Press a button to try again." : (e.message || String(e)), true);
        buttons.forEach(b => { b.disabled = false; });
      }
    }
    buttons.forEach(b => b.addEventListener("click", ev => { ev.preventDefault(); register(b.dataset.platform === "true"); }));
    main.querySelector("form").addEventListener("submit", ev => ev.preventDefault());
    // The buttons come disabled, so that no click is lost before this runs.
    if (usable()) {
      buttons.forEach(b => { b.disabled = false; });
    } else {
      show(UNUSABLE, true);
    }
    main.dataset.ready = "yes";
  }

  // The approval of an SSH login: the page shows the code the terminal
  // shows; a touch of one of the account's keys lets the waiting login go on.
  function approvePage(main) {
    const status = document.getElementById("status");
    const show = shower(status);
    const post = poster(main);
    const approve = document.getElementById("approve");
    const deny = document.getElementById("deny");
    const done = document.getElementById("done");
    function finished(text) {
      main.querySelector(".actions").hidden = true;
      status.hidden = true;
      done.querySelector("p").textContent = text;
      done.hidden = false;
    }
    async function run() {
      approve.disabled = true;
      deny.disabled = true;
      try {
        show("Asking the gate…", false);
        const opts = await post("/options", {});
        const pk = opts.publicKey;
        pk.challenge = fromB64u(pk.challenge);
        (pk.allowCredentials || []).forEach(c => { c.id = fromB64u(c.id); });
        show("Touch your key…", false);
        const cred = await navigator.credentials.get({ publicKey: pk });
        const r = cred.response;
        await post("/finish", {
          id: cred.id,
          rawId: toB64u(cred.rawId),
          type: cred.type,
          response: {
            authenticatorData: toB64u(r.authenticatorData),
            clientDataJSON: toB64u(r.clientDataJSON),
            signature: toB64u(r.signature),
            userHandle: r.userHandle ? toB64u(r.userHandle) : null,
          },
          extensions: {},
        });
        finished("Approved. The login in your terminal goes on now; you can close this page.");
      } catch (e) {
        show(cancelled(e) ? "The key was not used (cancelled, or it took too long). Press the button to try again." : (e.message || String(e)), true);
        approve.disabled = false;
        deny.disabled = false;
      }
    }
    async function refuse() {
      approve.disabled = true;
      deny.disabled = true;
      try {
        await post("/deny", {});
        finished("Refused. The login in the terminal has been turned away. If it was not you, change your password and tell your sysop.");
      } catch (e) {
        show(e.message || String(e), true);
      }
    }
    approve.addEventListener("click", ev => { ev.preventDefault(); run(); });
    deny.addEventListener("click", ev => { ev.preventDefault(); refuse(); });
    if (usable()) {
      approve.disabled = false;
    } else {
      show(UNUSABLE, true);
    }
    deny.disabled = false;
    main.dataset.ready = "yes";
  }

  const enroll = document.getElementById("key-enroll");
  if (enroll) enrollPage(enroll);
  const approval = document.getElementById("key-approve");
  if (approval) approvePage(approval);
})();
