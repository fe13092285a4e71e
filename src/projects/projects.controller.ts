import {
  Body,
  Controller,
  Delete,
  Get,
  Headers,
  HttpCode,
  Param,
  Patch,
  Post,
  Query,
} from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import type { AnyAbility } from '@casl/ability';
import { Authenticated, CurrentAbility, CurrentPrincipal, Principal } from '@app/realtime';
import { parseDeleteBody } from '../common/delete-body';
import { ProjectsService } from './projects.service';

@ApiTags('projects')
@Controller('api/projects')
@Authenticated()
export class ProjectsController {
  constructor(private readonly projects: ProjectsService) {}

  @Get()
  @ApiOperation({ summary: 'List projects: ?department=&ownerId=&limit=&cursor=' })
  list(@CurrentAbility() ability: AnyAbility, @Query() query: Record<string, unknown>) {
    return this.projects.list(ability, query);
  }

  @Post()
  @ApiOperation({ summary: 'Create a project (201 with the document)' })
  create(
    @CurrentPrincipal() principal: Principal,
    @CurrentAbility() ability: AnyAbility,
    @Body() body: unknown,
  ) {
    return this.projects.create(principal, ability, body);
  }

  @Get(':id')
  get(@CurrentAbility() ability: AnyAbility, @Param('id') id: string) {
    return this.projects.get(ability, id);
  }

  @Patch(':id')
  @ApiOperation({
    summary:
      'Update a project; `version` in the body or If-Match; 409 with the current document when stale',
  })
  update(
    @CurrentAbility() ability: AnyAbility,
    @Param('id') id: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch?: string,
  ) {
    return this.projects.update(ability, id, body, ifMatch);
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Delete a project; `version` in the body or If-Match; 409 when stale' })
  async remove(
    @CurrentAbility() ability: AnyAbility,
    @Param('id') id: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch?: string,
  ): Promise<void> {
    await this.projects.remove(ability, id, parseDeleteBody(body), ifMatch);
  }
}
