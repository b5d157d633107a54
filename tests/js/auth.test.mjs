// Accounts as a matrix-js-sdk user sees them: password login, whoami,
// devices, profile, logout, and the errors a login screen shows.
// Run through `go test ./homeserver/jstest/ -run TestAuth`.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { HttpApiEvent } from "matrix-js-sdk";

import {
  login,
  newClient,
  rejectsWithMatrixError,
  serverName,
  testUser,
  waitForEvent,
} from "./helpers.mjs";

const alice = testUser("alice");
const bob = testUser("bob");

describe("password login", () => {
  test("the server offers m.login.password", async () => {
    const { flows } = await newClient().loginFlows();
    assert.ok(
      flows.some((f) => f.type === "m.login.password"),
      `login flows ${JSON.stringify(flows)} lack m.login.password`,
    );
  });

  test("loginWithPassword signs the client in as the user", async () => {
    const client = newClient();
    // The deprecated helper sends the legacy top-level `user` field, as
    // older clients still do, and stores the token on the client.
    const res = await client.loginWithPassword(alice.localpart, alice.password);
    assert.equal(res.user_id, alice.userId);
    assert.match(res.access_token, /^\S{16,}$/);
    assert.ok(res.device_id, "login response has no device_id");
    assert.equal(client.getUserId(), alice.userId);
    assert.equal(client.getAccessToken(), res.access_token);

    const me = await client.whoami();
    assert.equal(me.user_id, alice.userId);
    assert.equal(me.device_id, res.device_id);
    assert.equal(me.is_guest ?? false, false);
    await client.logout();
  });

  test("a full user ID logs in too", async () => {
    const client = newClient();
    const res = await client.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: alice.userId },
      password: alice.password,
    });
    assert.equal(res.user_id, alice.userId);
    assert.equal(alice.userId, `@${alice.localpart}:${serverName}`);
  });

  test("a wrong password is refused with M_FORBIDDEN", async () => {
    const client = newClient();
    const err = await rejectsWithMatrixError(
      client.loginWithPassword(alice.localpart, alice.password + "-wrong"),
      "M_FORBIDDEN",
      403,
    );
    assert.ok(err.data.error, "the error has no human-readable message");
    assert.equal(client.getAccessToken(), null, "a failed login left a token on the client");
  });

  test("an unknown user gets the same M_FORBIDDEN", async () => {
    await rejectsWithMatrixError(
      newClient().loginWithPassword("nobody-" + Date.now(), "whatever-password"),
      "M_FORBIDDEN",
      403,
    );
  });
});

describe("devices", () => {
  test("a login appears in the device list and can be renamed", async () => {
    const client = await login(alice, "Alice's laptop");
    const deviceId = client.getDeviceId();
    assert.ok(deviceId);

    const { devices } = await client.getDevices();
    const mine = devices.find((d) => d.device_id === deviceId);
    assert.ok(mine, `device ${deviceId} missing from ${JSON.stringify(devices)}`);
    assert.equal(mine.display_name, "Alice's laptop");

    await client.setDeviceDetails(deviceId, { display_name: "Alice's old laptop" });
    assert.equal((await client.getDevice(deviceId)).display_name, "Alice's old laptop");

    // A second session sees the renamed device next to its own.
    const phone = await login(alice, "Alice's phone");
    const seen = (await phone.getDevices()).devices;
    const names = Object.fromEntries(seen.map((d) => [d.device_id, d.display_name]));
    assert.equal(names[deviceId], "Alice's old laptop");
    assert.equal(names[phone.getDeviceId()], "Alice's phone");

    await phone.logout();
    await client.logout();
  });

  test("another user's device cannot be renamed", async () => {
    const a = await login(alice);
    const b = await login(bob);
    // The server answers 404 for a device that is not the caller's, so as
    // not to reveal other users' device IDs.
    await rejectsWithMatrixError(
      b.setDeviceDetails(a.getDeviceId(), { display_name: "pwned" }),
      "M_NOT_FOUND",
      404,
    );
    const mine = await a.getDevice(a.getDeviceId());
    assert.equal(mine.display_name, "matrix-js-sdk test");
    await a.logout();
    await b.logout();
  });
});

describe("profile", () => {
  test("a display name set by the user is what others see", async () => {
    const a = await login(alice);
    await a.setDisplayName("Alice Liddell");
    assert.deepEqual(await a.getProfileInfo(alice.userId, "displayname"), { displayname: "Alice Liddell" });

    const b = await login(bob);
    const profile = await b.getProfileInfo(alice.userId);
    assert.equal(profile.displayname, "Alice Liddell");

    // Each user names only themselves: Bob's change is his own.
    await b.setDisplayName("Bob");
    assert.equal((await a.getProfileInfo(bob.userId)).displayname, "Bob");
    assert.equal((await b.getProfileInfo(alice.userId)).displayname, "Alice Liddell");
    await a.logout();
    await b.logout();
  });

  test("an unknown user has no profile", async () => {
    const b = await login(bob);
    await rejectsWithMatrixError(b.getProfileInfo(`@nobody:${serverName}`), "M_NOT_FOUND", 404);
    await b.logout();
  });
});

describe("logout", () => {
  test("the token stops working and the client hears it was logged out", async () => {
    const client = await login(alice, "soon gone");
    const token = client.getAccessToken();
    const deviceId = client.getDeviceId();
    const other = await login(alice, "stays");

    assert.deepEqual(await client.logout(), {});

    // The same client, still holding the old token: the SDK reports the
    // session as logged out, which is how an app learns to show its login
    // screen.
    const [[loggedOut]] = await Promise.all([
      waitForEvent(client, HttpApiEvent.SessionLoggedOut, () => true, 5_000, "Session.logged_out"),
      rejectsWithMatrixError(client.whoami(), "M_UNKNOWN_TOKEN", 401),
    ]);
    assert.equal(loggedOut.errcode, "M_UNKNOWN_TOKEN");

    // A fresh client given the old token fares no better.
    await rejectsWithMatrixError(
      newClient({ userId: alice.userId, accessToken: token }).whoami(),
      "M_UNKNOWN_TOKEN",
      401,
    );

    // The logged-out device is gone from the user's other session.
    const { devices } = await other.getDevices();
    assert.ok(!devices.some((d) => d.device_id === deviceId), `device ${deviceId} survived logout`);
    assert.equal((await other.whoami()).user_id, alice.userId);
    await other.logout();
  });
});
