// End-to-end encryption through our server only, the way Element does it:
// matrix-js-sdk with its Rust crypto (@matrix-org/matrix-sdk-crypto-wasm).
// Alice and Bob each bootstrap cross-signing (device signing keys behind
// user-interactive auth), Alice creates an encrypted room and invites Bob,
// each decrypts the other's messages, they verify each other by comparing
// emoji (SAS, in the room), and Alice's room keys go to a server-side key
// backup.
// Run through `go test ./homeserver/jstest/ -run TestE2EE`.

import assert from "node:assert/strict";
import { after, before, describe } from "node:test";

import { EventType, MatrixEventEvent, MsgType, Preset, RoomEvent } from "matrix-js-sdk";
import { CryptoEvent, VerificationPhase, VerifierEvent } from "matrix-js-sdk/lib/crypto-api/index.js";

import { login, startSyncing, stepper, testUser, untilSynced } from "./helpers.mjs";

const alice = testUser("alice");
const bob = testUser("bob");

const STEP_MS = 20_000;

const step = stepper();

// eventually resolves once check() resolves truthy, retrying every 100 ms:
// the SDK uploads keys and learns of signatures in the background.
async function eventually(check, what) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${STEP_MS} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// withCrypto logs a user in and starts Rust crypto (in memory: node has no
// IndexedDB), which uploads the device's keys.
async function withCrypto(user, device) {
  const client = await login(user, device);
  await client.initRustCrypto({ useIndexedDB: false });
  return client;
}

// bootstrapCrossSigning makes and uploads the user's master, self-signing
// and user-signing keys, answering the server's user-interactive auth with
// the password, and signs the device with them.
async function bootstrapCrossSigning(client, user) {
  await client.getCrypto().bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: user.localpart },
        password: user.password,
      });
    },
  });
}

// decryptedMessage waits for a message from sender in roomId and resolves
// with its cleartext content once decrypted; it fails if the event could not
// be decrypted.
function decryptedMessage(client, sender, roomId, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(RoomEvent.Timeline, onTimeline);
      reject(new Error(`timed out after ${STEP_MS} ms waiting for ${what}`));
    }, STEP_MS);
    const done = (event) => {
      clearTimeout(timer);
      client.off(RoomEvent.Timeline, onTimeline);
      if (event.isDecryptionFailure()) {
        reject(new Error(`${what}: could not be decrypted (${event.decryptionFailureReason})`));
      } else {
        resolve(event);
      }
    };
    const onTimeline = (event, room, toStart) => {
      if (room?.roomId !== roomId || toStart || event.getSender() !== sender || event.getWireType() !== EventType.RoomMessageEncrypted) {
        return;
      }
      if (event.isBeingDecrypted() || event.shouldAttemptDecryption()) {
        event.once(MatrixEventEvent.Decrypted, () => done(event));
      } else {
        done(event);
      }
    };
    client.on(RoomEvent.Timeline, onTimeline);
  });
}

describe("end-to-end encryption with Rust crypto", () => {
  let a;
  let b;

  before(async () => {
    a = await withCrypto(alice, "Alice's Element");
    b = await withCrypto(bob, "Bob's Element");
  });

  after(() => {
    a?.stopClient();
    b?.stopClient();
  });

  step("both upload device keys and sync", async () => {
    await Promise.all([startSyncing(a, { timeoutMs: STEP_MS }), startSyncing(b, { timeoutMs: STEP_MS })]);
    // Each device's keys are on the server: the other can query them.
    await eventually(async () => {
      const found = await a.getCrypto().getUserDeviceInfo([bob.userId], true);
      return found.get(bob.userId)?.has(b.getDeviceId());
    }, "Alice's client to find Bob's device keys");
  });

  step("both bootstrap cross-signing (behind user-interactive auth)", async () => {
    await bootstrapCrossSigning(a, alice);
    await bootstrapCrossSigning(b, bob);
    for (const [client, who] of [
      [a, "Alice"],
      [b, "Bob"],
    ]) {
      const status = await client.getCrypto().getCrossSigningStatus();
      assert.ok(status.publicKeysOnDevice, `${who}'s cross-signing public keys are on the device`);
      assert.ok(await client.getCrypto().isCrossSigningReady(), `${who}'s cross-signing is ready`);
      // The client learns of its device's signature from the server, after
      // the next sync reports its device list changed.
      await eventually(async () => {
        const own = await client.getCrypto().getDeviceVerificationStatus(client.getUserId(), client.getDeviceId());
        return own?.signedByOwner;
      }, `${who}'s device to be signed by their self-signing key`);
    }
    // Alice sees Bob's cross-signing identity through /keys/query.
    await eventually(() => a.getCrypto().userHasCrossSigningKeys(bob.userId, true), "Bob's cross-signing keys at Alice");
  });

  let roomId;

  step("Alice creates an encrypted room and Bob joins", async () => {
    const created = await a.createRoom({
      name: "Secrets",
      preset: Preset.TrustedPrivateChat,
      invite: [bob.userId],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    roomId = created.room_id;
    await untilSynced(b, () => b.getRoom(roomId)?.getMyMembership() === "invite", STEP_MS, "Bob's invite");
    await b.joinRoom(roomId);
    await untilSynced(
      a,
      () => a.getRoom(roomId)?.getMember(bob.userId)?.membership === "join",
      STEP_MS,
      "Bob's join in Alice's client",
    );
    assert.ok(await a.getCrypto().isEncryptionEnabledInRoom(roomId), "the room is encrypted");
  });

  step("Bob decrypts Alice's message", async () => {
    const got = decryptedMessage(b, alice.userId, roomId, "Alice's encrypted message at Bob");
    await a.sendMessage(roomId, { msgtype: MsgType.Text, body: "only Bob can read this" });
    const event = await got;
    assert.equal(event.isEncrypted(), true, "it travelled encrypted");
    assert.equal(event.getContent().body, "only Bob can read this");
  });

  step("Alice decrypts Bob's answer", async () => {
    const got = decryptedMessage(a, bob.userId, roomId, "Bob's encrypted answer at Alice");
    await b.sendMessage(roomId, { msgtype: MsgType.Text, body: "and only Alice this" });
    const event = await got;
    assert.equal(event.isEncrypted(), true);
    assert.equal(event.getContent().body, "and only Alice this");
  });

  step("Alice and Bob verify each other (SAS emoji, in the room)", async () => {
    // Bob accepts the request when it arrives; both confirm the emoji.
    const bobVerifies = new Promise((resolve, reject) => {
      b.once(CryptoEvent.VerificationRequestReceived, async (request) => {
        try {
          await request.accept();
          await eventually(() => request.verifier, "Alice to start SAS");
          request.verifier.on(VerifierEvent.ShowSas, (sas) => sas.confirm());
          await request.verifier.verify();
          resolve();
        } catch (err) {
          reject(err);
        }
      });
    });
    const request = await a.getCrypto().requestVerificationDM(bob.userId, roomId);
    await eventually(() => request.phase === VerificationPhase.Ready, "Bob to accept the verification");
    const verifier = await request.startVerification("m.sas.v1");
    let emoji;
    verifier.on(VerifierEvent.ShowSas, (sas) => {
      emoji = sas.sas.emoji;
      sas.confirm();
    });
    await Promise.all([verifier.verify(), bobVerifies]);
    assert.equal(emoji?.length, 7, "seven emoji were compared");
    await eventually(
      async () => (await a.getCrypto().getUserVerificationStatus(bob.userId)).isCrossSigningVerified(),
      "Bob to be verified by Alice (her user-signing key on his master key)",
    );
    await eventually(
      async () => (await b.getCrypto().getUserVerificationStatus(alice.userId)).isCrossSigningVerified(),
      "Alice to be verified by Bob",
    );
  });

  step("Alice backs her room keys up on the server", async () => {
    await a.getCrypto().resetKeyBackup();
    // The SDK enables the new backup in the background.
    const deadline = Date.now() + STEP_MS;
    let active = null;
    while (!active && Date.now() < deadline) {
      active = await a.getCrypto().getActiveSessionBackupVersion();
      if (!active) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(active, "a backup version is active");
    // Then it uploads the room's session in the background.
    let count = 0;
    while (Date.now() < deadline) {
      const res = await a.http.authedRequest("GET", "/room_keys/version");
      count = res.count;
      if (count > 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(count > 0, `the backup holds Alice's room keys (count ${count})`);
  });
});
