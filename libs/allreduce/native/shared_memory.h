#pragma once
#include <node_api.h>

#define SHARED_MEMORY_PROPERTIES 4
// Fills SHARED_MEMORY_PROPERTIES descriptors: mapShared, waitAtLeast, publish, sumInOrder.
void shared_memory_properties(napi_property_descriptor *out);
