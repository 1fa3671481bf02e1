-- Quay's tables that trafficd reads, as Quay's Alembic migrations create them on
-- PostgreSQL (quay/quay, data/migrations/versions):
--   c156deb8845d (reset of the migrations): imagestorage, imagestoragelocation,
--     imagestorageplacement, queueitem, mediatype
--   9093adccc784 (V2_2 data models): manifest, manifestblob
--   909d725887d3: index manifestblob_repository_id_blob_id
--   3bd8075919b9: index imagestorage_uploading
--   queueitem.state_id and its unique index, as in Quay v3.12's schema
--   c156deb8845d's built-in imagestoragelocation rows (s3_us_east_1 ... local), which
--     every Quay database holds beside the configured locations (observed on real Quay)
-- `repository` is reduced to the columns the foreign keys need (trafficd never reads it).

CREATE TABLE mediatype (
    id SERIAL NOT NULL,
    name VARCHAR(255) NOT NULL,
    CONSTRAINT pk_mediatype PRIMARY KEY (id)
);
CREATE UNIQUE INDEX mediatype_name ON mediatype (name);

CREATE TABLE repository (
    id SERIAL NOT NULL,
    name VARCHAR(255) NOT NULL,
    CONSTRAINT pk_repository PRIMARY KEY (id)
);

CREATE TABLE imagestorage (
    id SERIAL NOT NULL,
    uuid VARCHAR(255) NOT NULL,
    checksum VARCHAR(255),
    image_size BIGINT,
    uncompressed_size BIGINT,
    uploading BOOLEAN,
    cas_path BOOLEAN DEFAULT false NOT NULL,
    content_checksum VARCHAR(255),
    CONSTRAINT pk_imagestorage PRIMARY KEY (id)
);
CREATE INDEX imagestorage_content_checksum ON imagestorage (content_checksum);
CREATE UNIQUE INDEX imagestorage_uuid ON imagestorage (uuid);
CREATE INDEX imagestorage_uploading ON imagestorage (uploading);

CREATE TABLE imagestoragelocation (
    id SERIAL NOT NULL,
    name VARCHAR(255) NOT NULL,
    CONSTRAINT pk_imagestoragelocation PRIMARY KEY (id)
);
CREATE UNIQUE INDEX imagestoragelocation_name ON imagestoragelocation (name);
INSERT INTO imagestoragelocation (name) VALUES
    ('s3_us_east_1'), ('s3_eu_west_1'), ('s3_ap_southeast_1'), ('s3_ap_southeast_2'),
    ('s3_ap_northeast_1'), ('s3_sa_east_1'), ('local'), ('s3_us_west_1');

CREATE TABLE imagestorageplacement (
    id SERIAL NOT NULL,
    storage_id INTEGER NOT NULL,
    location_id INTEGER NOT NULL,
    CONSTRAINT pk_imagestorageplacement PRIMARY KEY (id),
    CONSTRAINT fk_imagestorageplacement_location_id_imagestoragelocation
        FOREIGN KEY (location_id) REFERENCES imagestoragelocation (id),
    CONSTRAINT fk_imagestorageplacement_storage_id_imagestorage
        FOREIGN KEY (storage_id) REFERENCES imagestorage (id)
);
CREATE INDEX imagestorageplacement_location_id ON imagestorageplacement (location_id);
CREATE INDEX imagestorageplacement_storage_id ON imagestorageplacement (storage_id);
CREATE UNIQUE INDEX imagestorageplacement_storage_id_location_id
    ON imagestorageplacement (storage_id, location_id);

CREATE TABLE queueitem (
    id SERIAL NOT NULL,
    queue_name VARCHAR(1024) NOT NULL,
    body TEXT NOT NULL,
    available_after TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    available BOOLEAN NOT NULL,
    processing_expires TIMESTAMP WITHOUT TIME ZONE,
    retries_remaining INTEGER NOT NULL,
    state_id VARCHAR(255) DEFAULT '' NOT NULL,
    CONSTRAINT pk_queueitem PRIMARY KEY (id)
);
CREATE INDEX queueitem_available ON queueitem (available);
CREATE INDEX queueitem_available_after ON queueitem (available_after);
CREATE INDEX queueitem_processing_expires ON queueitem (processing_expires);
CREATE INDEX queueitem_queue_name ON queueitem (queue_name);
CREATE INDEX queueitem_retries_remaining ON queueitem (retries_remaining);
CREATE UNIQUE INDEX queueitem_state_id ON queueitem (state_id);

CREATE TABLE manifest (
    id SERIAL NOT NULL,
    repository_id INTEGER NOT NULL,
    digest VARCHAR(255) NOT NULL,
    media_type_id INTEGER NOT NULL,
    manifest_bytes TEXT NOT NULL,
    CONSTRAINT pk_manifest PRIMARY KEY (id),
    CONSTRAINT fk_manifest_media_type_id_mediatype
        FOREIGN KEY (media_type_id) REFERENCES mediatype (id),
    CONSTRAINT fk_manifest_repository_id_repository
        FOREIGN KEY (repository_id) REFERENCES repository (id)
);
CREATE INDEX manifest_digest ON manifest (digest);
CREATE INDEX manifest_media_type_id ON manifest (media_type_id);
CREATE INDEX manifest_repository_id ON manifest (repository_id);
CREATE UNIQUE INDEX manifest_repository_id_digest ON manifest (repository_id, digest);
CREATE INDEX manifest_repository_id_media_type_id ON manifest (repository_id, media_type_id);

CREATE TABLE manifestblob (
    id SERIAL NOT NULL,
    repository_id INTEGER NOT NULL,
    manifest_id INTEGER NOT NULL,
    blob_id INTEGER NOT NULL,
    blob_index INTEGER NOT NULL,
    CONSTRAINT pk_manifestblob PRIMARY KEY (id),
    CONSTRAINT fk_manifestblob_blob_id_imagestorage
        FOREIGN KEY (blob_id) REFERENCES imagestorage (id),
    CONSTRAINT fk_manifestblob_manifest_id_manifest
        FOREIGN KEY (manifest_id) REFERENCES manifest (id),
    CONSTRAINT fk_manifestblob_repository_id_repository
        FOREIGN KEY (repository_id) REFERENCES repository (id)
);
CREATE INDEX manifestblob_blob_id ON manifestblob (blob_id);
CREATE INDEX manifestblob_manifest_id ON manifestblob (manifest_id);
CREATE UNIQUE INDEX manifestblob_manifest_id_blob_id ON manifestblob (manifest_id, blob_id);
CREATE UNIQUE INDEX manifestblob_manifest_id_blob_index ON manifestblob (manifest_id, blob_index);
CREATE INDEX manifestblob_repository_id ON manifestblob (repository_id);
CREATE INDEX manifestblob_repository_id_blob_id ON manifestblob (repository_id, blob_id);
