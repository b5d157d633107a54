// Two matrix-js-sdk users chat the way an app built on the SDK does: each
// runs the SDK's own sync loop (startClient), Alice creates a room and
// invites Bob, Bob joins when the invite arrives through /sync, and each
// receives the other's message as a live "Room.timeline" event.
// Run through `go test ./homeserver/jstest/ -run TestMessaging`.

import assert from "node:assert/strict";
import { after, before, describe } from "node:test";

import { EventType, MsgType, Preset, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";

import { liveMessageFrom, login, startSyncing, stepper, testUser, untilSynced, waitForEvent } from "./helpers.mjs";

const alice = testUser("alice");
const bob = testUser("bob");

// How long one step (an event arriving through /sync) may take. The server
// wakes long-polls as soon as an event is written, so this is generous.
const STEP_MS = 10_000;

const step = stepper();

describe("messaging through the sync loop", () => {
  let a;
  let b;

  before(async () => {
    a = await login(alice, "Alice's browser");
    b = await login(bob, "Bob's browser");
  });

  after(() => {
    // Stop the sync loops even when a test failed, or node would wait on
    // them.
    a?.stopClient();
    b?.stopClient();
  });

  step("both clients finish their initial sync", async () => {
    await Promise.all([startSyncing(a, { initialSyncLimit: 5 }), startSyncing(b, { initialSyncLimit: 5 })]);
    // A fresh account is in no rooms.
    assert.deepEqual(
      b.getRooms().map((r) => r.roomId),
      [],
    );
  });

  let roomId;

  step("Alice creates a room and her client shows it", async () => {
    const created = await a.createRoom({ name: "Tea party", topic: "Unbirthdays", preset: Preset.PrivateChat });
    roomId = created.room_id;
    assert.match(roomId, /^!.+/);
    // The room reaches Alice's client through her own sync loop.
    await untilSynced(
      a,
      () => a.getRoom(roomId)?.getMyMembership() === "join",
      STEP_MS,
      "Alice's new room to arrive through /sync",
    );
    const room = a.getRoom(roomId);
    assert.equal(room.name, "Tea party");
    assert.equal(room.currentState.getStateEvents(EventType.RoomTopic, "")?.getContent().topic, "Unbirthdays");
    assert.equal(room.currentState.getStateEvents(EventType.RoomCreate, "")?.getSender(), alice.userId);
    assert.deepEqual(
      room.getJoinedMembers().map((m) => m.userId),
      [alice.userId],
    );
  });

  step("Bob hears of the invite through /sync and joins", async () => {
    // The SDK's documented auto-join: act on our own membership becoming
    // "invite", which the sync loop reports as RoomMember.membership.
    const bobJoins = waitForEvent(
      b,
      RoomMemberEvent.Membership,
      (_ev, member) => member.roomId === roomId && member.userId === bob.userId && member.membership === "invite",
      STEP_MS,
      "Bob's invite to arrive through /sync",
    ).then(([inviteEvent]) => {
      assert.equal(inviteEvent.getSender(), alice.userId);
      return b.joinRoom(roomId);
    });
    const [invited] = await Promise.all([a.invite(roomId, bob.userId), bobJoins]);
    assert.deepEqual(invited, {});

    const both = [alice.userId, bob.userId].sort();
    const joinedMembers = (client) =>
      client
        .getRoom(roomId)
        ?.getJoinedMembers()
        .map((m) => m.userId)
        .sort();
    // Bob's sync delivers the room's state; Alice's delivers his join.
    await Promise.all([
      untilSynced(
        b,
        () => b.getRoom(roomId)?.getMyMembership() === "join" && joinedMembers(b)?.length === 2,
        STEP_MS,
        "Bob's client to show the joined room with both members",
      ),
      untilSynced(a, () => joinedMembers(a)?.length === 2, STEP_MS, "Bob's join to reach Alice through /sync"),
    ]);
    assert.deepEqual(joinedMembers(b), both);
    assert.deepEqual(joinedMembers(a), both);
    assert.equal(b.getRoom(roomId).name, "Tea party");
  });

  step("Alice's message reaches Bob", async () => {
    const [[event], sent] = await Promise.all([
      waitForEvent(b, RoomEvent.Timeline, liveMessageFrom(alice.userId, roomId), STEP_MS, "Alice's message on Bob's timeline"),
      a.sendTextMessage(roomId, "Have some wine, Bob"),
    ]);
    assert.match(sent.event_id, /^\$/);
    assert.equal(event.getId(), sent.event_id);
    assert.equal(event.getContent().msgtype, MsgType.Text);
    assert.equal(event.getContent().body, "Have some wine, Bob");
    assert.ok(event.getTs() > 0, "event has no origin_server_ts");
    // What Bob's app renders: the last event of the room's live timeline.
    const timeline = b.getRoom(roomId).getLiveTimeline().getEvents();
    assert.equal(timeline.at(-1).getId(), sent.event_id);
  });

  step("Bob's reply reaches Alice", async () => {
    const [[event], sent] = await Promise.all([
      waitForEvent(a, RoomEvent.Timeline, liveMessageFrom(bob.userId, roomId), STEP_MS, "Bob's reply on Alice's timeline"),
      b.sendTextMessage(roomId, "I don't see any wine"),
    ]);
    assert.equal(event.getId(), sent.event_id);
    assert.equal(event.getContent().body, "I don't see any wine");

    // Alice's timeline holds the conversation in order, her message first.
    const bodies = a
      .getRoom(roomId)
      .getLiveTimeline()
      .getEvents()
      .filter((e) => e.getType() === EventType.RoomMessage)
      .map((e) => `${e.getSender()}: ${e.getContent().body}`);
    assert.deepEqual(bodies, [`${alice.userId}: Have some wine, Bob`, `${bob.userId}: I don't see any wine`]);
  });
});
