-- v6 -> v7: Rooms appservices publish in their networks' directories
CREATE TABLE appservice_room_directory (
	room_id    TEXT NOT NULL REFERENCES rooms(room_id),
	as_id      TEXT NOT NULL,
	network_id TEXT NOT NULL,
	PRIMARY KEY (room_id, as_id, network_id)
);
CREATE INDEX appservice_room_directory_network_idx ON appservice_room_directory (network_id);
