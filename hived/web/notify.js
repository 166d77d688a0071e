// The dashboard's side of notifications (docs/notifications.md): the "notify me" switch, which
// registers the service worker sw.js and subscribes this browser to Web Push with the
// daemon's VAPID key (`push.key`, `push.subscribe`), and attention: `watch` tells the daemon
// which session this tab shows and whether it has the focus, so that a session someone is
// looking at is not notified. app.js calls hivedNotify.connected(request) once welcomed and
// hivedNotify.watching(sessionId | null) when the open session changes.
"use strict";

(() => {
  const SWITCH_KEY = "hived.notify"; // "on" once this browser subscribed
  const state = { request: null, session: null };
  const $ = (id) => document.getElementById(id);

  function focused() {
    return document.visibilityState === "visible" && document.hasFocus();
  }

  function sendWatch() {
    if (!state.request) return;
    const fields = { session: state.session, focused: focused() };
    state.request("watch", fields).catch(() => {});
  }

  function supported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }

  async function subscribe() {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") throw new Error("notifications are blocked for this page");
    const registration = await navigator.serviceWorker.register("sw.js");
    await navigator.serviceWorker.ready;
    const key = await state.request("push.key");
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: key.public_key,
    });
    await state.request("push.subscribe", { subscription: subscription.toJSON() });
    localStorage.setItem(SWITCH_KEY, "on");
  }

  async function unsubscribe() {
    localStorage.removeItem(SWITCH_KEY);
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (!subscription) return;
    await state.request("push.unsubscribe", { endpoint: subscription.endpoint });
    await subscription.unsubscribe();
  }

  function onSwitch(event) {
    const box = event.target;
    const note = $("notify-note");
    note.hidden = true;
    (box.checked ? subscribe() : unsubscribe()).catch((error) => {
      box.checked = false;
      note.textContent = `notify me: ${error.message}`;
      note.hidden = false;
    });
  }

  /** The notifications panel: the last ones born, newest first, with what became of them. */
  async function loadPanel() {
    const list = $("notification-list");
    const result = await state.request("notifications", { limit: 20 });
    const items = result.notifications.map((row) => {
      const item = document.createElement("li");
      item.dataset.status = row.status;
      const when = new Date(row.born_at * 1000).toLocaleTimeString();
      const outcome = row.outcome ? ` (${row.outcome})` : "";
      item.textContent = `${when} ${row.item.title} — ${row.rule}: ${row.status}${outcome}`;
      return item;
    });
    if (items.length === 0) {
      const none = document.createElement("li");
      none.textContent = "none yet";
      items.push(none);
    }
    list.replaceChildren(...items);
  }

  window.hivedNotify = {
    connected(request) {
      state.request = request;
      $("notify-me").disabled = !supported();
      sendWatch();
    },
    watching(session) {
      state.session = session;
      sendWatch();
    },
  };

  document.addEventListener("DOMContentLoaded", () => {
    const box = $("notify-me");
    box.checked = localStorage.getItem(SWITCH_KEY) === "on";
    box.addEventListener("change", onSwitch);
    for (const name of ["focus", "blur"]) window.addEventListener(name, sendWatch);
    document.addEventListener("visibilitychange", sendWatch);
    $("notifications").addEventListener("toggle", (event) => {
      if (event.target.open && state.request) loadPanel().catch(() => {});
    });
  });
})();
