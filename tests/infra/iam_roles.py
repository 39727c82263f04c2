"""Google's predefined IAM roles that infra/iam.tf grants, and the permissions each holds.

From https://cloud.google.com/iam/docs/roles-permissions/pubsub, .../storage, .../run,
.../monitoring and .../secretmanager: the same lists `gcloud iam roles describe ROLE`
prints. Only the roles infra/iam.tf grants, plus the usual least-privilege alternatives;
tests/infra/test_permissions.py fails on a granted role missing here.
"""

from __future__ import annotations

from collections.abc import Mapping

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "roles/pubsub.publisher": frozenset({"pubsub.topics.publish"}),
    "roles/pubsub.subscriber": frozenset(
        {
            "pubsub.snapshots.seek",
            "pubsub.subscriptions.consume",
            "pubsub.topics.attachSubscription",
        }
    ),
    "roles/pubsub.viewer": frozenset(
        {
            "pubsub.messageTransforms.validate",
            "pubsub.schemas.get",
            "pubsub.schemas.list",
            "pubsub.schemas.listRevisions",
            "pubsub.schemas.validate",
            "pubsub.snapshots.get",
            "pubsub.snapshots.list",
            "pubsub.subscriptions.get",
            "pubsub.subscriptions.list",
            "pubsub.topics.get",
            "pubsub.topics.list",
            "resourcemanager.projects.get",
            "serviceusage.quotas.get",
            "serviceusage.services.get",
            "serviceusage.services.list",
        }
    ),
    "roles/storage.objectUser": frozenset(
        {
            "orgpolicy.policy.get",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.create",
            "storage.folders.delete",
            "storage.folders.get",
            "storage.folders.list",
            "storage.folders.rename",
            "storage.managedFolders.create",
            "storage.managedFolders.delete",
            "storage.managedFolders.get",
            "storage.managedFolders.list",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.create",
            "storage.multipartUploads.list",
            "storage.multipartUploads.listParts",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.get",
            "storage.objects.list",
            "storage.objects.move",
            "storage.objects.restore",
            "storage.objects.update",
        }
    ),
    "roles/storage.objectViewer": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.get",
            "storage.folders.list",
            "storage.managedFolders.get",
            "storage.managedFolders.list",
            "storage.objects.get",
            "storage.objects.list",
        }
    ),
    # Creates only: it cannot read, and cannot overwrite (that needs storage.objects.delete).
    "roles/storage.objectCreator": frozenset(
        {
            "orgpolicy.policy.get",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.create",
            "storage.managedFolders.create",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.create",
            "storage.multipartUploads.listParts",
            "storage.objects.create",
            "storage.objects.createContext",
        }
    ),
    "roles/run.invoker": frozenset({"run.jobs.run", "run.routes.invoke"}),
    # Cloud Run Jobs Executor (With Overrides): run.invoker's job half, plus cancelling; and
    # the only predefined role below run.developer that may override a run.
    "roles/run.jobsExecutor": frozenset({"run.executions.cancel", "run.jobs.run"}),
    "roles/run.jobsExecutorWithOverrides": frozenset(
        {"run.executions.cancel", "run.jobs.run", "run.jobs.runWithOverrides"}
    ),
    # Read-only; granted on a job, it reaches that job and its executions.
    "roles/run.viewer": frozenset(
        {
            "recommender.locations.get",
            "recommender.locations.list",
            "recommender.runServiceCostInsights.get",
            "recommender.runServiceCostInsights.list",
            "recommender.runServiceCostRecommendations.get",
            "recommender.runServiceCostRecommendations.list",
            "recommender.runServiceIdentityInsights.get",
            "recommender.runServiceIdentityInsights.list",
            "recommender.runServiceIdentityRecommendations.get",
            "recommender.runServiceIdentityRecommendations.list",
            "recommender.runServicePerformanceInsights.get",
            "recommender.runServicePerformanceInsights.list",
            "recommender.runServicePerformanceRecommendations.get",
            "recommender.runServicePerformanceRecommendations.list",
            "recommender.runServiceSecurityInsights.get",
            "recommender.runServiceSecurityInsights.list",
            "recommender.runServiceSecurityRecommendations.get",
            "recommender.runServiceSecurityRecommendations.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "run.configurations.get",
            "run.configurations.list",
            "run.executions.get",
            "run.executions.list",
            "run.jobs.get",
            "run.jobs.getIamPolicy",
            "run.jobs.list",
            "run.jobs.listEffectiveTags",
            "run.jobs.listTagBindings",
            "run.locations.list",
            "run.operations.get",
            "run.operations.list",
            "run.prompts.get",
            "run.revisions.get",
            "run.revisions.list",
            "run.routes.get",
            "run.routes.list",
            "run.services.get",
            "run.services.getIamPolicy",
            "run.services.list",
            "run.services.listEffectiveTags",
            "run.services.listTagBindings",
            "run.tasks.get",
            "run.tasks.list",
            "run.workerpools.get",
            "run.workerpools.getIamPolicy",
            "run.workerpools.list",
        }
    ),
    # Read-only; grantable on nothing below a project.
    "roles/monitoring.viewer": frozenset(
        {
            "cloudnotifications.activities.list",
            "monitoring.alertPolicies.get",
            "monitoring.alertPolicies.list",
            "monitoring.alertPolicies.listEffectiveTags",
            "monitoring.alertPolicies.listTagBindings",
            "monitoring.dashboards.get",
            "monitoring.dashboards.list",
            "monitoring.dashboards.listEffectiveTags",
            "monitoring.dashboards.listTagBindings",
            "monitoring.groups.get",
            "monitoring.groups.list",
            "monitoring.metricDescriptors.get",
            "monitoring.metricDescriptors.list",
            "monitoring.monitoredResourceDescriptors.get",
            "monitoring.monitoredResourceDescriptors.list",
            "monitoring.notificationChannelDescriptors.get",
            "monitoring.notificationChannelDescriptors.list",
            "monitoring.notificationChannels.get",
            "monitoring.notificationChannels.list",
            "monitoring.services.get",
            "monitoring.services.list",
            "monitoring.slos.get",
            "monitoring.slos.list",
            "monitoring.snoozes.get",
            "monitoring.snoozes.list",
            "monitoring.timeSeries.list",
            "monitoring.uptimeCheckConfigs.get",
            "monitoring.uptimeCheckConfigs.list",
            "opsconfigmonitoring.resourceMetadata.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "stackdriver.projects.get",
            "stackdriver.resourceMetadata.list",
        }
    ),
    "roles/secretmanager.secretAccessor": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "secretmanager.versions.access",
        }
    ),
    "roles/iam.serviceAccountUser": frozenset(
        {
            "iam.serviceAccounts.actAs",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
        }
    ),
}
