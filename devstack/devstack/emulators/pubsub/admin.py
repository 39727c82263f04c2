"""Topic and subscription administration: create, get, list, update, delete."""

from __future__ import annotations

import bisect

import grpc

from devstack.emulators.pubsub import validation as v
from devstack.emulators.pubsub.state import Sub
from devstack.emulators.pubsub.wire import ApiError, Subscription, Topic, not_found


def page_of(names: list[str], page_size: int, page_token: str) -> tuple[list[str], str]:
    """One page of sorted names; the token is the first name of the next page, as Google's."""
    start = bisect.bisect_left(names, page_token) if page_token else 0
    end = len(names) if page_size <= 0 else start + page_size
    return names[start:end], names[end] if end < len(names) else ""


class AdminMixin:
    """The administrative RPCs of the broker; expects the attributes Broker sets up."""

    def create_topic(self, topic: Topic) -> Topic:
        """Create a topic (ALREADY_EXISTS if it exists)."""
        v.check_topic_name(topic.name)
        with self.lock:
            if topic.name in self.topics:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            self.topics[topic.name] = topic
            self.topic_subs[topic.name] = []
            self.dirty = True
        return topic

    def get_topic(self, name: str) -> Topic:
        """A topic by name."""
        v.check_topic_name(name)
        topic = self.topics.get(name)
        if topic is None:
            raise not_found("Topic not found")
        return topic

    def project_page(self, kind: str, project: str, page_size: int, page_token: str):
        """One page of a project's topics, subscriptions or snapshots (kind), sorted by name:
        their settings and the next page's token."""
        records = {"topics": self.topics, "subscriptions": self.subs, "snapshots": self.snapshots}
        prefix = f"{project}/{kind}/"
        with self.lock:
            items = records[kind]
            names = sorted(n for n in items if n.startswith(prefix))
            page, token = page_of(names, page_size, page_token)
            # Topics are kept as their settings; subscriptions and snapshots as records.
            return [getattr(items[n], "config", items[n]) for n in page], token

    def list_topic_subscriptions(self, topic: str, page_size: int, page_token: str):
        """One page of the names of a topic's subscriptions (none for an unknown topic)."""
        v.check_topic_name(topic)
        with self.lock:
            names = sorted(s.name for s in self.topic_subs.get(topic, ()))
        return page_of(names, page_size, page_token)

    def delete_topic(self, name: str) -> None:
        """Delete a topic; its subscriptions stay, attached to Google's `_deleted-topic_`, and
        its snapshots stay, getting no more messages."""
        v.check_topic_name(name)
        with self.lock:
            if self.topics.pop(name, None) is None:
                raise not_found("Topic not found")
            self.policies.pop(name, None)
            self.detach_snapshots(name)
            for sub in self.topic_subs.pop(name, ()):
                config = Subscription()
                config.CopyFrom(sub.config)
                config.topic = v.DELETED_TOPIC
                sub.configure(config)
            self.dirty = True

    def create_subscription(self, config: Subscription) -> Subscription:
        """Create a subscription with Google's defaults filled in."""
        v.check_subscription_name(config.name)
        v.check_topic_name(config.topic)
        with self.lock:
            if config.topic not in self.topics:
                raise not_found("Subscription topic does not exist")
            if config.name in self.subs:
                raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            v.normalize_subscription(config, self.topics.__contains__)
            sub = Sub(config, self.lock)
            self.subs[config.name] = sub
            self.topic_subs[config.topic].append(sub)
            self.dirty = True
        return config

    def subscription(self, name: str) -> Sub:
        """The live subscription called name, or NOT_FOUND."""
        sub = self.subs.get(name)
        if sub is None:
            v.check_subscription_name(name)
            raise not_found("Subscription does not exist")
        return sub

    def get_subscription(self, name: str) -> Subscription:
        """A subscription's settings."""
        return self.subscription(name).config

    def update_subscription(self, changes: Subscription, paths) -> Subscription:
        """Change the fields named by paths (an update mask) of a subscription."""
        v.check_update_mask(list(paths))
        with self.lock:
            sub = self.subs.get(changes.name)
            if sub is None:
                raise not_found("Subscription not found.")
            config = Subscription()
            config.CopyFrom(sub.config)
            for path in paths:
                if path == "labels":
                    config.labels.clear()
                    config.labels.update(changes.labels)
                elif path not in _MESSAGE_FIELDS:
                    setattr(config, path, getattr(changes, path))
                elif changes.HasField(path):
                    getattr(config, path).CopyFrom(getattr(changes, path))
                else:
                    config.ClearField(path)
            v.normalize_subscription(config, self.topics.__contains__)
            sub.configure(config)
            self.dirty = True
        return config

    def delete_subscription(self, name: str) -> None:
        """Delete a subscription; its pulls and streams end."""
        with self.lock:
            sub = self.subscription(name)
            del self.subs[name]
            self.policies.pop(name, None)
            subs = self.topic_subs.get(sub.config.topic)
            if subs is not None:
                subs.remove(sub)
            sub.deleted = True
            for lease in sub.leases.values():
                self._release(lease)
            sub.leases.clear()
            sub.pending.clear()
            sub.cond.notify_all()
            self.dirty = True


_MESSAGE_FIELDS = frozenset(
    {
        "push_config",
        "bigquery_config",
        "cloud_storage_config",
        "message_retention_duration",
        "expiration_policy",
        "dead_letter_policy",
        "retry_policy",
    }
)
