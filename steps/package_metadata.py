"""Keys of the model package's ``CustomerMetadataProperties`` (written at registration).

The approval handler reads them to publish an approved package's segments.
"""

EXECUTION_ID = "pipeline_execution_id"
FEATURES_URI = "features_uri"
TRANSFORM_INPUT_URI = "transform_input_uri"
# The ModelApprovalStatus the package was registered with; "Approved" means the registering
# run published its segments itself.
REGISTERED_STATUS = "approval_status_at_registration"
# Where the evaluation step wrote this package's report.html (Studio shows the package's metadata).
REPORT_URI = "report_uri"
# The run's TransformInstanceCount (a decimal string): approving the package later publishes it with as many
# transform instances as the run that registered it used.
TRANSFORM_INSTANCE_COUNT = "transform_instance_count"
