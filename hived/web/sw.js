// The dashboard's service worker: shows the Web Push notifications hived sends (their payload:
// {title, body, session, tag}, see docs/notifications.md) and, on a click, opens the dashboard
// on that session (`?session=ID`).
"use strict";

self.addEventListener("push", (event) => {
  const data = event.data ? event.data.json() : {};
  const url = data.session ? `./?session=${encodeURIComponent(data.session)}` : "./";
  event.waitUntil(
    self.registration.showNotification(data.title || "hived", {
      body: data.body || "",
      tag: data.tag || "hived",
      data: { url },
    }),
  );
});

// Pages opened before the worker was installed are taken over, so that a click can reuse them.
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** Open the dashboard on the notification's session: in a dashboard tab already open (brought
 * to the front where the browser allows it), else in a new one. */
async function openFromNotification(notification) {
  notification.close();
  const url = new URL(notification.data.url, self.registration.scope).href;
  const tabs = await self.clients.matchAll({ type: "window" });
  if (tabs.length === 0) return self.clients.openWindow(url);
  const tab = tabs[0];
  try {
    await tab.focus();
  } catch {
    // Only a real click may bring a window to the front; navigating it is enough.
  }
  return tab.navigate(url);
}

self.addEventListener("notificationclick", (event) => {
  event.waitUntil(openFromNotification(event.notification));
});
